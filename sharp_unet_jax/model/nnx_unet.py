"""SharpBlock and UNet as Flax NNX modules, numerically the Linen ones.

NNX modules hold their parameters as `nnx.Param` attributes and are created
with their input channels and an `nnx.Rngs`. Only the way the parameters are
held differs from the Linen modules: the options (names and defaults) are
models.UNet's and sharp_block.SharpBlock's, the parameter tree is
`models.param_shapes`' (paths `encoder_0/Conv_0/kernel`, ... as in Linen), and
the computation is the Linen modules' own function (`models.forward`,
`sharp_block.sharpen`). The Sharp block's kernel stays a constant of the
computation: the NNX state holds the learnable weights only.

`linen_params` and `load_linen_params` move parameters between an NNX UNet
and a Linen parameter tree (so a training checkpoint: `restore.load`).
"""

import dataclasses
from typing import Any, Optional

from flax import nnx
import jax
import jax.numpy as jnp

from sharp_unet_jax.model import models, sharp_block

# The options of a UNet: models.UNet's attributes, each an NNX UNet keyword.
UNET_OPTIONS = tuple(
  f.name for f in dataclasses.fields(models.UNet) if f.name not in ('parent', 'name')
)


def _static_kernel(spec: Optional[sharp_block.KernelSpec]):
  """The kernel spec as NNX keeps a constant: a name, None or a 3x3 tuple
  (NNX would hold an array attribute as state)."""
  if spec is None or isinstance(spec, str):
    if spec is not None:
      sharp_block.make_kernel(spec)  # an unknown name fails here, not later
    return spec
  return tuple(tuple(row) for row in sharp_block.make_kernel(spec).tolist())


class SharpBlock(nnx.Module):
  """Applies a constant depthwise 3x3 kernel to every channel.

  The NNX form of `sharp_block.SharpBlock` (same arguments and defaults, same
  computation). It holds no state: the kernel is not a parameter.

  Args:
    kernel: 'laplacian' (the paper's), 'sharpen', 'blur' or a 3x3 array-like.
    dtype: computation dtype; None keeps the input's dtype.
    implementation: 'conv', 'shifted_sum' or 'auto' (sharp_block.sharp_filter).
  """

  def __init__(
    self,
    kernel: sharp_block.KernelSpec = 'laplacian',
    *,
    dtype: Any = None,
    implementation: str = 'conv',
  ):
    self.kernel = _static_kernel(kernel)
    self.dtype = dtype
    self.implementation = implementation

  def __call__(self, x: jax.Array) -> jax.Array:
    return sharp_block.sharpen(x, self.kernel, self.dtype, self.implementation)


class Conv(nnx.Module):
  """The kernel and bias of one convolution (float32, bias starts at 0)."""

  def __init__(self, shape: tuple, kernel_init, rngs: nnx.Rngs):
    self.kernel = nnx.Param(kernel_init(rngs.params(), shape, jnp.float32))
    self.bias = nnx.Param(jnp.zeros(shape[-1:], jnp.float32))


class Layers(nnx.Module):
  """Named sub-modules as attributes (a level's Conv_0 and Conv_1)."""

  def __init__(self, layers: dict):
    for name, layer in layers.items():
      setattr(self, name, layer)


def _declare(shape, kernel_init, rngs: nnx.Rngs) -> nnx.Module:
  """A `Conv`, or `Layers` of them for a dict of shapes."""
  if isinstance(shape, dict):
    return Layers({name: _declare(s, kernel_init, rngs) for name, s in shape.items()})
  return Conv(shape, kernel_init, rngs)


class UNet(nnx.Module):
  """U-Net with optional sharpened skip connections (Sharp U-Net), in NNX.

  The NNX form of `models.UNet`: the same keyword options with the same
  defaults (see models.UNet for each), the same parameter tree and forward
  pass; the parameters are created here, for `in_features` input channels.

  Args:
    in_features: channels of the input images (3 for RGB).
    rngs: the parameters' random keys (`nnx.Rngs(0)`).
    num_classes, num_filters, depth, sharp_kernel, dtype, kernel_init,
      implementation: as models.UNet's attributes.
  """

  def __init__(
    self,
    in_features: int,
    *,
    rngs: nnx.Rngs,
    num_classes: int = 1,
    num_filters: int = 32,
    depth: int = 4,
    sharp_kernel: Optional[sharp_block.KernelSpec] = 'laplacian',
    dtype: Any = jnp.float32,
    kernel_init=models.INITIALIZERS['glorot_uniform'],
    implementation: str = 'auto',
  ):
    self.num_classes = num_classes
    self.num_filters = num_filters
    self.depth = depth
    self.sharp_kernel = _static_kernel(sharp_kernel)
    self.dtype = dtype
    self.kernel_init = kernel_init
    self.implementation = implementation
    shapes = models.param_shapes(in_features, num_filters, depth, num_classes)
    for name, shape in shapes.items():
      setattr(self, name, _declare(shape, kernel_init, rngs))

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps images (N, H, W, C) to logits (N, H, W, num_classes), float32."""
    return models.forward(
      linen_params(self),
      x,
      depth=self.depth,
      sharp_kernel=self.sharp_kernel,
      dtype=self.dtype,
      implementation=self.implementation,
    )


def linen_params(model: UNet) -> dict:
  """The model's parameters as the Linen UNet's tree (`params`), the same arrays."""
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def load_linen_params(model: UNet, params) -> UNet:
  """Sets `model`'s parameters from a Linen UNet's tree; returns the model.

  Args:
    model: an NNX UNet.
    params: the Linen tree, e.g. `restore.load(workdir).params` or
      `linen_model.init(...)['params']`.

  Raises:
    ValueError: if the trees' paths or shapes differ.
  """
  state = nnx.state(model, nnx.Param)
  ours = _shapes(nnx.to_pure_dict(state))
  theirs = _shapes(params)
  if ours != theirs:
    wrong = sorted(set(ours.items()) ^ set(theirs.items()))
    raise ValueError(
      f'The parameters do not fit the NNX UNet: {len(wrong)} differing '
      f'(path, shape) entries, e.g. {wrong[0]}.'
    )
  nnx.replace_by_pure_dict(state, jax.tree_util.tree_map(jnp.asarray, params))
  nnx.update(model, state)
  return model


def _shapes(tree) -> dict:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in flat}


def from_linen(module: models.UNet, params) -> UNet:
  """The NNX UNet of a Linen UNet `module` (its options) and its `params`.

  E.g. of a trained workdir: `restored = restore.load(workdir)`, then
  `from_linen(restored.model, restored.params)`.
  """
  in_features = params['encoder_0']['Conv_0']['kernel'].shape[2]
  options = linen_options(module)
  # Only the structure is built: the parameters are `params`, not random.
  model = nnx.eval_shape(lambda: UNet(in_features, rngs=nnx.Rngs(0), **options))
  return load_linen_params(model, params)


def create_model(config, *, rngs: nnx.Rngs, platform: Optional[str] = None) -> UNet:
  """The NNX UNet of a training config (models.create_model's options,
  validated there), for config.num_channels input channels."""
  options = linen_options(models.create_model(config, platform))
  return UNet(config.num_channels, rngs=rngs, **options)


def linen_options(module: models.UNet) -> dict:
  """A Linen UNet's options, as the NNX UNet's keywords."""
  return {name: getattr(module, name) for name in UNET_OPTIONS}
