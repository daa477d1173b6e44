"""Sharp U-Net as Flax NNX modules: `SharpBlock`, `UNet` and the parameter
bridge to the Linen modules (and so to training checkpoints).

  from flax import nnx
  from sharp_unet_jax import nnx as sharp_nnx

  model = sharp_nnx.UNet(3, rngs=nnx.Rngs(0))  # the paper's Sharp U-Net

They are defined in model/nnx_unet.py.
"""

from sharp_unet_jax.model.nnx_unet import (
  SharpBlock,
  UNet,
  create_model,
  from_linen,
  linen_params,
  load_linen_params,
)

__all__ = [
  'SharpBlock',
  'UNet',
  'create_model',
  'from_linen',
  'linen_params',
  'load_linen_params',
]
