"""Image channel conversion shared by the data pipeline and exported models."""

import jax
import jax.numpy as jnp
import numpy as np

from sharp_unet_jax.errors import UserError

# ITU-R 601 luma weights: RGB to grey.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def to_channels(images, channels: int):
  """Converts (..., H, W, C) images to `channels` channels, in numpy or JAX.

  Grey is repeated to RGB, an alpha channel is dropped, and RGB becomes grey
  by the rounded ITU-R 601 luma. The training pipeline (numpy) and exported
  predictors (traced JAX) both call it, so both see the same pixels.

  Args:
    images: a numpy array or a jax.Array, channels last.
    channels: the channels wanted.

  Returns:
    The images with `channels` channels, of the same kind and dtype.

  Raises:
    UserError: for a conversion the training data never makes.
  """
  xp = jnp if isinstance(images, jax.Array) else np
  have = original = images.shape[-1]
  if have == 4 and channels != 4:
    images, have = images[..., :3], 3
  if have == channels:
    return images
  if have == 1 and channels == 3:
    return xp.repeat(images, 3, axis=-1)
  if have == 3 and channels == 1:
    luma = images.astype(xp.float32) @ xp.asarray(_LUMA)
    return xp.round(luma)[..., None].astype(images.dtype)
  raise UserError(f'Cannot convert images with {original} channels to {channels}.')
