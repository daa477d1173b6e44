"""Sharp U-Net in JAX/Flax: a U-Net whose skip connections are sharpened.

The model classes import lazily, so that importing a submodule (or the
package) pulls in neither Flax nor TensorFlow until they are used:

  from sharp_unet_jax import SharpBlock, UNet
"""

import importlib

# Public name -> the submodule that defines it.
_EXPORTS = {'SharpBlock': 'model.sharp_block', 'UNet': 'model.models'}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
  """Imports `SharpBlock` and `UNet` from their submodules on first use."""
  if name in _EXPORTS:
    module = importlib.import_module(f'{__name__}.{_EXPORTS[name]}')
    return getattr(module, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + __all__)
