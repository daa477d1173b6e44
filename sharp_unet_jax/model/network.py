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
- 'tpu_blocked': the reference ops, except that the levels with fewer than
  128 channels run on 2x2 blocks (blocked.py), which TPUs store without lane
  padding; the blocked layout is kept from a level's first convolution to
  its max-pool, and from its up-convolution to the next up-convolution.
"""

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from sharp_unet_jax.model import blocked, fast_layers, sharp_block

# The wide levels that the TPU form may block: 0 and 1.
MAX_BLOCKED = 2
# The form 'auto' takes in TPU programs. 'tpu_blocked' cuts the train step's
# estimated time (XLA's bytes accessed) but raises its HBM-only bytes and
# the predict step's time (docs/performance.md), so until a TPU measures it
# 'auto' keeps the reference form; --config.implementation=tpu_blocked asks
# for it.
AUTO_TPU_FORM = 'reference'

FORMS = {
  'reference': {'sharp': 'conv', 'pool': 'reduce_window', 'upsample': 'conv'},
  'cpu_fast': {'sharp': 'shifted_sum', 'pool': 'strided_slices', 'upsample': 'dot'},
  'tpu_blocked': {'sharp': 'conv', 'pool': 'reduce_window', 'upsample': 'conv'},
}


def conv(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """A stride-1 'SAME' convolution plus bias, exactly as `nn.Conv` runs it."""
  y = jax.lax.conv_general_dilated(
    x,
    kernel,
    (1, 1),
    'SAME',
    lhs_dilation=(1, 1),
    rhs_dilation=(1, 1),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )
  return y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))


def _conv_pair(x, params, conv_fn):
  for i in range(2):
    layer = params[f'Conv_{i}']
    x = jax.nn.relu(conv_fn(x, layer['kernel'], layer['bias']))
  return x


def blocked_levels(form: str, num_filters: int, depth: int) -> frozenset:
  """The levels that `form` runs on 2x2 blocks: of the first MAX_BLOCKED,
  those with fewer channels than TPU lanes. Deeper levels are small (a
  sixteenth of the pixels at level 2), so their blocked kernels, 16 times the
  size of the real ones, would cost more traffic than they save."""
  if form != 'tpu_blocked':
    return frozenset()
  levels = range(min(depth, MAX_BLOCKED))
  return frozenset(lvl for lvl in levels if num_filters * 2**lvl < blocked.LANES)


def _encoder(x, params, depth, forms, blocked_set, record):
  skips = []
  for level in range(depth):
    layer = params[f'encoder_{level}']
    if level in blocked_set:
      x = _conv_pair(blocked.space_to_depth(x), layer, blocked.conv3x3)
      skips.append(x)
      x = blocked.max_pool(x)
    else:
      x = _conv_pair(x, layer, conv)
      record(f'features_{level}', x)
      skips.append(x)
      x = fast_layers.max_pool(x, forms['pool'])
  return x, skips


def _decoder_level(x, skip, params, level, forms, blocked_set, kernel, record):
  """Up-convolution, Sharp block, concatenation and conv pair of one level."""
  up = params[f'upsample_{level}']
  layer = params[f'decoder_{level}']
  if level + 1 in blocked_set:
    x = blocked.depth_to_space(x)
  if level in blocked_set:
    x = blocked.upconv(x, up['kernel'], up['bias'])
    if kernel is not None:
      skip = blocked.sharp_filter(skip, kernel)
    # Conv_0 reads [up, skip], each blocked; the Sharp block's output is
    # channel-major.
    parts = [(x.shape[-1] // 4, False), (skip.shape[-1] // 4, kernel is not None)]
    first = functools.partial(blocked.conv3x3, parts=parts)
    x = jnp.concatenate([x, skip], axis=-1)
    x = jax.nn.relu(first(x, layer['Conv_0']['kernel'], layer['Conv_0']['bias']))
    conv1 = layer['Conv_1']
    return jax.nn.relu(blocked.conv3x3(x, conv1['kernel'], conv1['bias']))
  x = fast_layers.upconv(x, up['kernel'], forms['upsample']) + up['bias']
  if kernel is not None:
    skip = sharp_block.sharp_filter(skip, kernel, forms['sharp'])
    record(f'sharp_{level}', skip)
  return _conv_pair(jnp.concatenate([x, skip], axis=-1), layer, conv)


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

  Args:
    params: the UNet's parameter tree (float32).
    x: images; sides divisible by 2**depth.
    form: 'reference', 'cpu_fast' or 'tpu_blocked' (see the module docstring).
    depth: pooling levels.
    sharp_kernel: the Sharp block's 3x3 constant, or None for a plain U-Net.
    dtype: computation dtype; parameters are cast to it, as nn.Conv does.
    record: called with ('features_<level>', encoder output) and ('sharp_<level>',
      sharpened skip) at the unblocked levels, e.g. to sow them.
  """
  forms = FORMS[form]
  num_filters = params['encoder_0']['Conv_0']['kernel'].shape[-1]
  blocked_set = blocked_levels(form, num_filters, depth)
  params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
  record = record or (lambda name, value: None)
  x, skips = _encoder(x.astype(dtype), params, depth, forms, blocked_set, record)
  x = _conv_pair(x, params['bottleneck'], conv)
  for level in reversed(range(depth)):
    x = _decoder_level(
      x, skips[level], params, level, forms, blocked_set, sharp_kernel, record
    )
  head = params['head']
  if 0 in blocked_set:
    logits = blocked.depth_to_space(blocked.head(x, head['kernel'], head['bias']))
  else:
    logits = conv(x, head['kernel'], head['bias'])
  return logits.astype(jnp.float32)


def platform_forward(params, x, *, implementation: str, **kwargs) -> jax.Array:
  """`forward` in the named form; 'auto' picks it per target platform when
  the program is lowered (never from the host's backend): cpu_fast for CPU,
  AUTO_TPU_FORM for TPU, reference for the rest (GPU)."""
  if implementation != 'auto':
    return forward(params, x, form=implementation, **kwargs)
  branch = {form: functools.partial(forward, form=form, **kwargs) for form in FORMS}
  return jax.lax.platform_dependent(
    params,
    x,
    cpu=branch['cpu_fast'],
    tpu=branch[AUTO_TPU_FORM],
    default=branch['reference'],
  )
