"""U-Net and Sharp U-Net as one Flax module.

The topology follows the Keras reference of Sharp U-Net exactly: per encoder
level two 3x3 conv + ReLU and a 2x2 max-pool; a bottleneck of two 3x3 conv +
ReLU; per decoder level a 2x2 stride-2 transposed conv with no activation, a
channel concatenation [upsampled, skip] and two 3x3 conv + ReLU; a 1x1 head.
With `sharp_kernel` set, each skip connection first passes a `SharpBlock`.
The model returns logits: one channel for sigmoid (binary) segmentation, K
channels for softmax over K classes.

Run as a module to print a parameter overview for a config:

  python -m sharp_unet_jax.model.models --config=configs/default.py
"""

import functools
from typing import Any, Callable, Optional

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp

from sharp_unet_jax.model import network, sharp_block

Initializer = Callable[..., jax.Array]

# config.implementation: a form of network.py, or 'auto' (chosen per platform).
IMPLEMENTATIONS = (*network.FORMS, 'auto')

# config.dtype (compute; parameters and optimiser stay float32): 'auto' is
# bfloat16 where the model is compiled for TPU or GPU and float32 on CPU
# (docs/performance.md, "Precision").
DTYPES = ('float32', 'bfloat16', 'auto')

INITIALIZERS = {
  # Keras' default, used by the paper.
  'glorot_uniform': nn.initializers.glorot_uniform(),
  # Flax's default.
  'lecun_normal': nn.initializers.lecun_normal(),
  # The U-Net paper's Gaussian with std sqrt(2 / fan_in).
  'he_normal': nn.initializers.he_normal(),
}


class ConvParams(nn.Module):
  """The kernel and bias of one convolution, declared as nn.Conv and
  nn.ConvTranspose declare theirs (same names, order, initialisers)."""

  shape: tuple
  kernel_init: Initializer = INITIALIZERS['glorot_uniform']

  @nn.compact
  def __call__(self) -> dict:
    kernel = self.param('kernel', self.kernel_init, self.shape, jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, self.shape[-1:], jnp.float32)
    return {'kernel': kernel, 'bias': bias}


class ConvPair(nn.Module):
  """The parameters of two 3x3 convolutions, Conv_0 and Conv_1."""

  shapes: tuple
  kernel_init: Initializer = INITIALIZERS['glorot_uniform']

  @nn.compact
  def __call__(self) -> dict:
    return {
      f'Conv_{i}': ConvParams(shape, self.kernel_init, name=f'Conv_{i}')()
      for i, shape in enumerate(self.shapes)
    }


class UNet(nn.Module):
  """U-Net with optional sharpened skip connections (Sharp U-Net).

  Attributes:
    num_classes: 1 for binary segmentation (sigmoid logits), K > 1 for K-class
      segmentation (softmax logits).
    num_filters: channels of the first level; level i has num_filters * 2**i.
    depth: number of pooling levels (4 in the paper); input sides must be
      divisible by 2**depth.
    sharp_kernel: None for a plain U-Net, else the SharpBlock kernel ('laplacian'
      in the paper, 'sharpen', 'blur' or a 3x3 array).
    dtype: computation dtype (e.g. jnp.bfloat16); parameters stay float32 and
      the logits are returned as float32.
    kernel_init: initialiser of every convolution kernel; biases start at 0.
    implementation: how the network is computed, all forms giving the same
      result (network.py): 'reference' (the design's grouped convolution,
      nn.max_pool and transposed convolution), 'cpu_fast' (fused shifted
      sums, strided slices and one dot: faster on CPU, see fast_layers.py),
      'tpu_packed' (the levels narrower than 128 channels carry several
      images side by side in the lanes, see packed.py), 'gpu_cudnn' (the
      up-convolution as cuDNN's data-gradient convolution, network.py) or
      'auto' (cpu_fast in programs compiled for CPU, network.AUTO_TPU_FORM
      for TPU, network.AUTO_GPU_FORM for CUDA GPUs, decided per target
      platform when the program is lowered).
  """

  num_classes: int = 1
  num_filters: int = 32
  depth: int = 4
  sharp_kernel: Optional[sharp_block.KernelSpec] = 'laplacian'
  dtype: Any = jnp.float32
  kernel_init: Initializer = INITIALIZERS['glorot_uniform']
  implementation: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps images (N, H, W, C) to logits (N, H, W, num_classes)."""
    return forward(
      self._declare_params(x.shape[-1]),
      x,
      depth=self.depth,
      sharp_kernel=self.sharp_kernel,
      dtype=self.dtype,
      implementation=self.implementation,
      # Sown as intermediates; a platform_dependent branch cannot sow.
      record=lambda name, value: self.sow('intermediates', name, value),
    )

  def _declare_params(self, channels: int) -> dict:
    """The parameter tree of `param_shapes`, declared in its order."""
    params = {}
    for name, shape in param_shapes(
      channels, self.num_filters, self.depth, self.num_classes
    ).items():
      if isinstance(shape, dict):
        layer = ConvPair(tuple(shape.values()), self.kernel_init, name=name)
      else:
        layer = ConvParams(shape, self.kernel_init, name=name)
      params[name] = layer()
    return params


def param_shapes(channels: int, num_filters: int, depth: int, num_classes: int) -> dict:
  """The UNet's convolutions, in the order the layers run (as the Keras model).

  The one plan of the parameter tree: the Linen and the NNX UNet both
  declare theirs from it. Each convolution has a kernel of the given shape
  and a bias of its last dimension.

  Args:
    channels: input channels.
    num_filters: channels of the first level; level i has num_filters * 2**i.
    depth: pooling levels.
    num_classes: output channels.

  Returns:
    {layer: kernel shape} for one convolution (an up-convolution, the head),
    {layer: {'Conv_0': kernel shape, 'Conv_1': kernel shape}} for the two
    3x3 convolutions of a level.
  """

  def pair(features_in, features):
    return {
      'Conv_0': (3, 3, features_in, features),
      'Conv_1': (3, 3, features, features),
    }

  shapes = {}
  for level in range(depth):
    features = num_filters * 2**level
    shapes[f'encoder_{level}'] = pair(channels, features)
    channels = features
  features = num_filters * 2**depth
  shapes['bottleneck'] = pair(channels, features)
  for level in reversed(range(depth)):
    shapes[f'upsample_{level}'] = (2, 2, features, features // 2)
    features //= 2
    shapes[f'decoder_{level}'] = pair(2 * features, features)
  shapes['head'] = (1, 1, features, num_classes)
  return shapes


def check_call(shape, depth: int, implementation: str) -> None:
  """Raises ValueError for an input shape or implementation UNet cannot run."""
  check_input_shape(shape, depth)
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
      f'Unknown implementation {implementation!r}; use one of '
      f'{sorted(IMPLEMENTATIONS)}.'
    )


def forward(
  params: dict,
  x: jax.Array,
  *,
  depth: int,
  sharp_kernel: Optional[sharp_block.KernelSpec],
  dtype: Any,
  implementation: str,
  record: Optional[Callable[[str, jax.Array], None]] = None,
) -> jax.Array:
  """The UNet's logits for `params` (a `param_shapes` tree of kernels and
  biases) and images `x`: the forward pass of the Linen and the NNX UNet.

  Args:
    params: the parameter tree.
    x: images (N, H, W, C).
    depth, sharp_kernel, dtype, implementation: as the UNet's attributes.
    record: called with intermediate values (network.forward), except with
      implementation='auto'.
  """
  check_call(x.shape, depth, implementation)
  kernel = None if sharp_kernel is None else sharp_block.make_kernel(sharp_kernel)
  kwargs = {}
  if implementation != 'auto' and record is not None:
    kwargs['record'] = record
  return network.platform_forward(
    params,
    x,
    implementation=implementation,
    depth=depth,
    sharp_kernel=kernel,
    dtype=dtype,
    **kwargs,
  )


def check_input_shape(shape, depth: int) -> None:
  """Raises ValueError unless `shape` is NHWC with sides divisible by 2**depth."""
  if len(shape) != 4:
    raise ValueError(f'U-Net expects NHWC input, got shape {tuple(shape)}.')
  factor = 2**depth
  height, width = shape[1], shape[2]
  if height % factor or width % factor:
    raise ValueError(
      f'Image sides must be divisible by 2**depth = {factor}; got '
      f'{height}x{width}. Change image_size or depth.'
    )


MODELS = {
  'sharp_unet': functools.partial(UNet, sharp_kernel='laplacian'),
  'unet': functools.partial(UNet, sharp_kernel=None),
}


def compute_dtype(name: str, platform: str, device: Any = None) -> str:
  """The compute dtype that `config.dtype` names on `platform` ('cpu', 'gpu'
  or 'tpu'): 'auto' is 'float32' on CPU and on GPUs without native bfloat16
  (compute capability below 8.0, e.g. T4 and V100: it is logged), else
  'bfloat16'.

  Args:
    name: config.dtype.
    platform: where the model is compiled.
    device: one of the devices it is compiled for (its `compute_capability`,
      e.g. '7.5', is read on GPU; None or none given: native bfloat16).

  Raises:
    ValueError: for an unknown name.
  """
  if name not in DTYPES:
    raise ValueError(f'config.dtype={name!r} is unknown; use one of {list(DTYPES)}.')
  if name != 'auto':
    return name
  if platform == 'cpu':
    return 'float32'
  capability = (
    getattr(device, 'compute_capability', None) if platform == 'gpu' else None
  )
  if capability and _version(capability) < (8, 0):
    logging.info(
      "config.dtype='auto': float32 on %s (compute capability %s has no native "
      'bfloat16).',
      getattr(device, 'device_kind', 'this GPU'),
      capability,
    )
    return 'float32'
  return 'bfloat16'


def _version(capability) -> tuple:
  """'7.5' (JAX's form) or (7, 5) -> (7, 5)."""
  if isinstance(capability, str):
    capability = capability.split('.')
  return tuple(int(part) for part in capability)


def create_model(config, platform: Optional[str] = None, device: Any = None) -> UNet:
  """Builds the model named by `config.model` from a training config.

  Args:
    config: a training config.
    platform: where the model is compiled ('cpu', 'gpu' or 'tpu'), which
      resolves config.dtype='auto' with `device` (compute_dtype) and, for
      CPU and TPU, implementation='auto' (network.form_for_platform); None:
      JAX's default backend and its first device, and 'auto' stays 'auto'
      (a program that may be lowered for several platforms, as export does).
    device: a device of `platform`.

  Raises:
    ValueError: for an unknown model, initialiser or dtype.
  """
  if config.model not in MODELS:
    raise ValueError(
      f'config.model={config.model!r} is unknown; use one of {sorted(MODELS)}.'
    )
  if config.kernel_init not in INITIALIZERS:
    raise ValueError(
      f'config.kernel_init={config.kernel_init!r} is unknown; use one of '
      f'{sorted(INITIALIZERS)}.'
    )
  # Without a platform, 'auto' stays in the model (platform_dependent).
  implementation = _implementation(config, platform)
  if platform is None:
    platform, device = jax.default_backend(), jax.devices()[0]
  dtype = compute_dtype(config.dtype, platform, device)
  kwargs = {}
  if config.model == 'sharp_unet':
    kwargs['sharp_kernel'] = config.sharp_kernel
  return MODELS[config.model](
    num_classes=config.num_classes,
    num_filters=config.num_filters,
    depth=config.depth,
    dtype=jnp.dtype(dtype),
    kernel_init=INITIALIZERS[config.kernel_init],
    implementation=implementation,
    **kwargs,
  )


def _implementation(config, platform) -> str:
  """config.implementation, with 'auto' resolved where `platform` is known
  (network.form_for_platform).

  Raises:
    ValueError: for an unknown implementation.
  """
  # Configs written before the key existed (config.json) mean 'auto'.
  implementation = config.get('implementation', 'auto')
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
      f'config.implementation={implementation!r} is unknown; use one of '
      f'{sorted(IMPLEMENTATIONS)}.'
    )
  if platform is None or implementation != 'auto':
    return implementation
  # The target is known: trace its form only. (platform_dependent traces
  # all four forms, and their derivatives: about 2.5 s more CPU for the
  # tiny config's train step, at every start.)
  return network.form_for_platform(platform)


def init_params(model: UNet, config, rng: jax.Array):
  """Initialises the parameters for the config's input shape."""
  height, width = config.image_size
  dummy = jnp.zeros((1, height, width, config.num_channels), jnp.float32)
  return model.init(rng, dummy)['params']


def count_params(params) -> int:
  """Number of scalars in a parameter tree."""
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


def _summary_main(argv) -> None:
  """Prints the parameter overview of --config's model, like Keras' summary()."""
  from absl import flags  # noqa: PLC0415
  from clu import parameter_overview  # noqa: PLC0415

  del argv
  config = flags.FLAGS.config
  model = create_model(config)
  height, width = config.image_size
  dummy = jnp.zeros((1, height, width, config.num_channels), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), dummy)['params']
  print(
    f'{config.model}: input {height}x{width}x{config.num_channels}, '
    f'{config.num_classes} output channel(s)'
  )
  print(parameter_overview.get_parameter_overview(params, include_stats=False))
  print('The Sharp block kernel is a constant: it is not a parameter.')
  print(f'trainable_params={count_params(params)}')


if __name__ == '__main__':
  from absl import app  # noqa: PLC0415
  from ml_collections import config_flags  # noqa: PLC0415

  config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
  app.run(_summary_main)
