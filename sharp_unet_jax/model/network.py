"""The U-Net forward pass as a pure function of its parameters, in each form.

`models.UNet` declares the parameters (the tree of `nn.Conv` and
`nn.ConvTranspose`) and calls `forward` with them, so one parameter tree
serves every form and `jax.lax.platform_dependent` can choose a whole form
per target platform (a branch must be a pure function: Flax modules cannot
run inside it). The forms compute the same result:

- 'reference': the design's ops (grouped convolution for the Sharp block,
  `nn.max_pool`, transposed convolution);
- 'cpu_fast': fused shifted sums, strided slices and one dot (fast_layers.py,
  sharp_block.py), faster on CPU;
- 'tpu_packed': the reference ops, except that the levels with fewer than
  128 channels carry several images side by side in the channel (lane)
  dimension, with block-diagonal kernels (packed.py), which TPUs store
  without lane padding;
- 'gpu_cudnn': the reference ops, except that the up-convolution's kernel is
  flipped and transposed so that XLA's GPU compiler runs it as cuDNN's
  data-gradient convolution instead of a convolution over a 4x dilated copy
  of its input (fast_layers._upconv_transposed_kernel), and the Sharp
  block's per-channel kernel is a whole constant (sharp_block's
  'conv_dense_kernel'), which XLA:GPU folds into the program rather than
  broadcasting it in a kernel of its own, and that the gradient is summed
  over devices as one flat float32 buffer (`vary_summing_flat`).
"""

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from sharp_unet_jax.compilation import meshes
from sharp_unet_jax.model import fast_layers, packed, sharp_block

# The form 'auto' takes in every TPU program (docs/performance.md: its
# estimated train step is 0.52-0.84 of Keras's, its eval and predict steps
# 0.52-0.99).
AUTO_TPU_FORM = 'tpu_packed'
# The form 'auto' takes in GPU (CUDA) programs (docs/performance.md).
AUTO_GPU_FORM = 'gpu_cudnn'

# Each form's layer implementations, and how the gradient is summed over
# devices ('gradient_sum', `per_device`).
FORMS = {
  'reference': {
    'sharp': 'conv',
    'pool': 'reduce_window',
    'upsample': 'conv',
    'gradient_sum': 'per_parameter',
  },
  'cpu_fast': {
    'sharp': 'shifted_sum',
    'pool': 'strided_slices',
    'upsample': 'dot',
    'gradient_sum': 'per_parameter',
  },
  'tpu_packed': {
    'sharp': 'conv',
    'pool': 'reduce_window',
    'upsample': 'conv',
    'gradient_sum': 'per_parameter',
  },
  'gpu_cudnn': {
    'sharp': 'conv_dense_kernel',
    'pool': 'reduce_window',
    'upsample': 'conv_transposed_kernel',
    'gradient_sum': 'flat',
  },
}


def conv(x: jax.Array, kernel: jax.Array, bias=None, images: int = 1) -> jax.Array:
  """A stride-1 'SAME' convolution (plus bias), exactly as `nn.Conv` runs it;
  of `images` images packed in x's channels if images > 1 (packed.py)."""
  y = jax.lax.conv_general_dilated(
    x,
    packed.block_diagonal(kernel, images),
    (1, 1),
    'SAME',
    lhs_dilation=(1, 1),
    rhs_dilation=(1, 1),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )
  if bias is None:
    return y
  return y + jnp.reshape(packed.bias(bias, images), (1,) * (y.ndim - 1) + (-1,))


def _relu_conv(x, layer, images=1):
  return jax.nn.relu(conv(x, layer['kernel'], layer['bias'], images))


def images_per_level(form: str, x: jax.Array, num_filters: int, depth: int) -> list:
  """Images packed together at each level, the bottleneck last (1: unpacked).

  'tpu_packed' packs f = `packed.images_per_pack` images at level 0, and at
  each deeper level, with twice the channels, as many as fill the lanes
  without exceeding them (a power of two): f, f/2, ... down to 1. Every other
  form packs none."""
  if form != 'tpu_packed':
    return [1] * (depth + 1)
  f = packed.images_per_pack(x, num_filters)
  per_level = []
  for level in range(depth + 1):
    while f > 1 and f * num_filters * 2**level > packed.LANES:
      f //= 2
    per_level.append(f)
  return per_level


def _level_convs(x, layer, per_level, level):
  """A level's two convolutions. The first runs in its input's packing (the
  level above's) and hands the images this level packs fewer of back to the
  batch dimension (whole 128-lane tiles)."""
  above = per_level[max(level - 1, 0)]
  x = _relu_conv(x, layer['Conv_0'], above)
  x = packed.unpack(x, above // per_level[level])
  return _relu_conv(x, layer['Conv_1'], per_level[level])


def _encoder(x, params, depth, forms, per_level, record):
  x = packed.pack(x, per_level[0])
  skips = []
  for level in range(depth):
    x = _level_convs(x, params[f'encoder_{level}'], per_level, level)
    record(f'features_{level}', x)
    skips.append(x)
    x = fast_layers.max_pool(x, forms['pool'])
  return _level_convs(x, params['bottleneck'], per_level, depth), skips


def _conv_of_concatenation(x, skip, layer, images):
  """`conv` of [x, skip] along channels. Packed arrays cannot be joined that
  way (each image's channels must stay together), so there it is the sum
  of two convolutions with the kernel's halves: the same products."""
  if images == 1:
    return conv(jnp.concatenate([x, skip], axis=-1), layer['kernel'], layer['bias'])
  split = x.shape[-1] // images
  kernel = layer['kernel']
  y = conv(x, kernel[:, :, :split], layer['bias'], images)
  return y + conv(skip, kernel[:, :, split:], None, images)


def _decoder_level(x, skip, params, level, forms, per_level, kernel, record):
  """Up-convolution, Sharp block, concatenation and conv pair of one level."""
  f = per_level[level]
  x = packed.pack(x, f // per_level[level + 1])
  up = params[f'upsample_{level}']
  upconv_kernel = packed.block_diagonal(up['kernel'], f)
  x = fast_layers.upconv(x, upconv_kernel, forms['upsample']) + packed.bias(
    up['bias'], f
  )
  if kernel is not None:
    skip = sharp_block.sharp_filter(skip, kernel, forms['sharp'])
    record(f'sharp_{level}', skip)
  layer = params[f'decoder_{level}']
  x = jax.nn.relu(_conv_of_concatenation(x, skip, layer['Conv_0'], f))
  return _relu_conv(x, layer['Conv_1'], f)


def forward(
  params: dict,
  x: jax.Array,
  *,
  form: str,
  depth: int,
  sharp_kernel: Optional[np.ndarray],
  dtype: Any,
  record: Optional[Callable[[str, jax.Array], None]] = None,
) -> jax.Array:
  """Logits (N, H, W, K), float32, of images `x` (N, H, W, C).

  Each device runs the network on its own part of the batch (`per_device`),
  so the parameters' gradient is summed over devices in float32 whatever
  the computation dtype.

  Args:
    params: the UNet's parameter tree (float32).
    x: images; sides divisible by 2**depth.
    form: 'reference', 'cpu_fast', 'tpu_packed' or 'gpu_cudnn' (see the
      module docstring).
    depth: pooling levels.
    sharp_kernel: the Sharp block's 3x3 constant, or None for a plain U-Net.
    dtype: computation dtype; parameters are cast to it, as nn.Conv does.
    record: called with ('features_<level>', encoder output) and ('sharp_<level>',
      sharpened skip), e.g. to sow them; only when x's batch is not sharded
      (Flax cannot sow from inside a shard_map).
  """
  network = functools.partial(
    _network, form=form, depth=depth, sharp_kernel=sharp_kernel, dtype=dtype
  )
  gradient_sum = FORMS[form]['gradient_sum']
  return per_device(network, record, gradient_sum)(params, x).astype(jnp.float32)


def per_device(fn, record=None, gradient_sum: str = 'per_parameter'):
  """`fn(params, x, record)` run on each device's part of x's batch
  (`jax.shard_map` over the batch's mesh axes, params replicated, record
  None), or as it is if x's batch is not sharded.

  So each device packs its own images, and the gradient of the replicated
  parameters is summed over devices once, in the parameters' own shapes and
  dtype (float32): `fn` casts them to the computation dtype on each device,
  after the cast below, and folds each block-diagonal kernel's gradient
  back into its kernel's before the sum. (Cast before the shard_map, a
  bfloat16 program summed bfloat16 gradients; without the cast below, JAX
  sums the block-diagonal kernels' gradients, f^2 times larger.)

  gradient_sum: 'per_parameter' (JAX's own sum of each parameter's
  gradient, which XLA combines into one all-reduce) or 'flat'
  (`vary_summing_flat`).
  """

  def run(params, x):
    batch = meshes.batch_sharding(x)
    if batch is None:
      return fn(params, x, record)
    axes = batch.spec[0]

    def local(params, x):
      # Varying over the batch axes from here on, so that the gradient is
      # summed over devices here, in the parameters' own shapes.
      if gradient_sum == 'flat':
        params = vary_summing_flat(params, axes)
      else:
        params = _vary(params, axes)
      return fn(params, x, None)

    return meshes.shard_over_batch(local, batch, batched=(False, True))(params, x)

  return run


def _vary(params, axes):
  """params made varying over the mesh `axes`: JAX sums their gradient
  over `axes`, each parameter's in its own shape."""
  return jax.tree_util.tree_map(lambda p: jax.lax.pcast(p, axes, to='varying'), params)


def vary_summing_flat(params, axes):
  """params made varying over the mesh `axes` (`jax.lax.pcast`), with a
  gradient summed over `axes` as one flat float32 buffer: each parameter's
  gradient is cast to float32, flattened and concatenated, the buffer is
  summed (one all-reduce), and each parameter's part is cut back out.

  The sums are those of `pcast`'s own gradient (an all-reduce of each
  parameter's gradient, which XLA:GPU concatenates into one buffer anyway).
  In XLA:GPU's programs, the casts and the layout changes of cuDNN's filter
  gradients then join the concatenation, and the optimiser's update reads
  its slice of the summed buffer in place, instead of transposing the
  gradients as it updates and copying its results back into the parameter
  and moment buffers (docs/performance.md, "GPU training"). On TPU it cost
  more, so only the 'gpu_cudnn' form sums this way.
  """

  @jax.custom_vjp
  def vary(params):
    return _vary(params, axes)

  def vary_forward(params):
    return vary(params), None

  def sum_backward(_, cotangent):
    leaves, tree = jax.tree_util.tree_flatten(cotangent)
    flat = jnp.concatenate([leaf.astype(jnp.float32).reshape(-1) for leaf in leaves])
    flat = jax.lax.psum(flat, axes)
    ends = np.cumsum([leaf.size for leaf in leaves])
    parts = [
      flat[end - leaf.size : end].reshape(leaf.shape).astype(leaf.dtype)
      for leaf, end in zip(leaves, ends)
    ]
    return (jax.tree_util.tree_unflatten(tree, parts),)

  vary.defvjp(vary_forward, sum_backward)
  return vary(params)


def _network(params, x, record, *, form, depth, sharp_kernel, dtype):
  params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
  x = x.astype(dtype)
  forms = FORMS[form]
  num_filters = params['encoder_0']['Conv_0']['kernel'].shape[-1]
  per_level = images_per_level(form, x, num_filters, depth)
  x, finite = isolate_non_finite(x, per_level[0])
  record = _unpacked_record(record, per_level)
  x, skips = _encoder(x, params, depth, forms, per_level, record)
  for level in reversed(range(depth)):
    x = _decoder_level(
      x, skips[level], params, level, forms, per_level, sharp_kernel, record
    )
  head = params['head']
  logits = packed.unpack(
    conv(x, head['kernel'], head['bias'], per_level[0]), per_level[0]
  )
  return logits if finite is None else jnp.where(finite, logits, jnp.nan)


def isolate_non_finite(x: jax.Array, images: int):
  """(x, finite): x with each image holding a NaN or infinity set to zeros,
  and which images were finite ((N, 1, 1, 1) bools), when `images` > 1 are
  packed together; (x, None) otherwise.

  In a packed convolution the block-diagonal kernel's zeros meet the other
  images' values, and 0 x inf is NaN: a non-finite pixel would turn its
  pack-mates' outputs to NaN. Zeroed, it cannot; the caller then sets that
  image's logits to NaN, as non-finite as the reference form's. (Finite
  images whose activations overflow to infinity inside the network, beyond
  3.4e38, are not isolated.)
  """
  if images == 1:
    return x, None
  finite = jnp.all(jnp.isfinite(x), axis=(1, 2, 3), keepdims=True)
  return jnp.where(finite, x, jnp.zeros((), x.dtype)), finite


def _unpacked_record(record, per_level):
  """`record` of the unpacked images (a level's arrays are in its packing)."""

  def unpacked(name, value):
    if record is not None:
      level = int(name.rsplit('_', 1)[1])
      record(name, packed.unpack(value, per_level[level]))

  return unpacked


def form_for_platform(platform: str) -> str:
  """The form 'auto' takes in programs for `platform` ('cpu' or 'tpu'), or
  'auto' where the platform leaves it open (a GPU: CUDA or ROCm)."""
  return {'cpu': 'cpu_fast', 'tpu': AUTO_TPU_FORM}.get(platform, 'auto')


def platform_forward(params, x, *, implementation: str, **kwargs) -> jax.Array:
  """`forward` in the named form; 'auto' picks it per target platform when
  the program is lowered (never from the host's backend): cpu_fast for CPU,
  AUTO_TPU_FORM for TPU, AUTO_GPU_FORM for CUDA GPUs, reference for the
  rest."""
  if implementation != 'auto':
    return forward(params, x, form=implementation, **kwargs)
  branch = {form: functools.partial(forward, form=form, **kwargs) for form in FORMS}
  return jax.lax.platform_dependent(
    params,
    x,
    cpu=branch['cpu_fast'],
    tpu=branch[AUTO_TPU_FORM],
    cuda=branch[AUTO_GPU_FORM],
    default=branch['reference'],
  )
