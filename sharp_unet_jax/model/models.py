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

  features: int
  kernel_init: Initializer = INITIALIZERS['glorot_uniform']

  @nn.compact
  def __call__(self, in_features: int) -> dict:
    shapes = [(3, 3, in_features, self.features), (3, 3, self.features, self.features)]
    return {
      f'Conv_{i}': ConvParams(shape, self.kernel_init, name=f'Conv_{i}')()
      for i, shape in enumerate(shapes)
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
    check_input_shape(x.shape, self.depth)
    if self.implementation not in IMPLEMENTATIONS:
      raise ValueError(
        f'Unknown implementation {self.implementation!r}; use one of '
        f'{sorted(IMPLEMENTATIONS)}.'
      )
    kernel = None
    if self.sharp_kernel is not None:
      kernel = sharp_block.make_kernel(self.sharp_kernel)
    kwargs = {}
    if self.implementation != 'auto':
      # Sown as intermediates; a platform_dependent branch cannot sow.
      kwargs['record'] = lambda name, value: self.sow('intermediates', name, value)
    return network.platform_forward(
      self._declare_params(x.shape[-1]),
      x,
      implementation=self.implementation,
      depth=self.depth,
      sharp_kernel=kernel,
      dtype=self.dtype,
      **kwargs,
    )

  def _declare_params(self, channels: int) -> dict:
    """The parameter tree, in the order the layers run (as the Keras model)."""
    init = self.kernel_init
    params = {}
    for level in range(self.depth):
      features = self.num_filters * 2**level
      params[f'encoder_{level}'] = ConvPair(features, init, name=f'encoder_{level}')(
        channels
      )
      channels = features
    features = self.num_filters * 2**self.depth
    params['bottleneck'] = ConvPair(features, init, name='bottleneck')(channels)
    for level in reversed(range(self.depth)):
      shape = (2, 2, features, features // 2)
      features //= 2
      params[f'upsample_{level}'] = ConvParams(shape, init, name=f'upsample_{level}')()
      params[f'decoder_{level}'] = ConvPair(features, init, name=f'decoder_{level}')(
        2 * features
      )
    shape = (1, 1, features, self.num_classes)
    params['head'] = ConvParams(shape, init, name='head')()
    return params


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


def compute_dtype(name: str, platform: str) -> str:
  """The compute dtype that `config.dtype` names on `platform` ('cpu', 'gpu'
  or 'tpu'): 'auto' is 'float32' on CPU and 'bfloat16' elsewhere.

  Raises:
    ValueError: for an unknown name.
  """
  if name not in DTYPES:
    raise ValueError(f'config.dtype={name!r} is unknown; use one of {list(DTYPES)}.')
  if name != 'auto':
    return name
  return 'float32' if platform == 'cpu' else 'bfloat16'


def create_model(config, platform: Optional[str] = None) -> UNet:
  """Builds the model named by `config.model` from a training config.

  Args:
    config: a training config.
    platform: where the model is compiled ('cpu', 'gpu' or 'tpu'), which
      resolves config.dtype='auto'; None: JAX's default backend.

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
  # Configs written before the key existed (config.json) mean 'auto'.
  implementation = config.get('implementation', 'auto')
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
      f'config.implementation={implementation!r} is unknown; use one of '
      f'{sorted(IMPLEMENTATIONS)}.'
    )
  kwargs = {}
  if config.model == 'sharp_unet':
    kwargs['sharp_kernel'] = config.sharp_kernel
  return MODELS[config.model](
    num_classes=config.num_classes,
    num_filters=config.num_filters,
    depth=config.depth,
    dtype=jnp.dtype(compute_dtype(config.dtype, platform or jax.default_backend())),
    kernel_init=INITIALIZERS[config.kernel_init],
    implementation=implementation,
    **kwargs,
  )


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
