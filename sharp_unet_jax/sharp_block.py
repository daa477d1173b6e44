"""The Sharp block: a fixed depthwise 3x3 filter applied to skip connections.

Sharp U-Net (Zunair and Ben Hamza, 2021) convolves every encoder feature map
with one constant 3x3 kernel, channel by channel, before it is concatenated
with the decoder features. The kernel is not learned: here it is built in code
at trace time, so it never enters the parameter tree, the optimiser state or a
checkpoint.

Example, inside any Flax model::

  skip = SharpBlock(kernel='laplacian')(features)   # same shape as features
"""

from typing import Any, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

KernelSpec = Union[str, Sequence[Sequence[float]], np.ndarray]

# Centre +8, all eight neighbours -1: the high-pass kernel behind the paper's
# published results. It sums to 0, so constant regions map to 0.
LAPLACIAN = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32)
# The classic sharpen kernel (sums to 1): identity plus a 4-neighbour Laplacian.
SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)
# Binomial 1/16 [1 2 1] x [1 2 1] blur (sums to 1).
BLUR = np.outer([1, 2, 1], [1, 2, 1]).astype(np.float32) / 16.0

NAMED_KERNELS = {'laplacian': LAPLACIAN, 'sharpen': SHARPEN, 'blur': BLUR}


def make_kernel(spec: KernelSpec) -> np.ndarray:
  """Returns the 3x3 float32 kernel for a name or an explicit 3x3 array.

  Args:
    spec: one of 'laplacian', 'sharpen', 'blur', or any 3x3 array-like.

  Raises:
    ValueError: for an unknown name or an array that is not 3x3.
  """
  if isinstance(spec, str):
    if spec not in NAMED_KERNELS:
      raise ValueError(
        f'Unknown sharp kernel {spec!r}; use one of {sorted(NAMED_KERNELS)} '
        'or a 3x3 array.'
      )
    return NAMED_KERNELS[spec].copy()
  kernel = np.asarray(spec, np.float32)
  if kernel.shape != (3, 3):
    raise ValueError(f'A sharp kernel must be 3x3, got shape {kernel.shape}.')
  return kernel


def depthwise_filter(x: jax.Array, kernel: np.ndarray) -> jax.Array:
  """Convolves every channel of NHWC `x` with the same 2-D `kernel`.

  Zero padding keeps the spatial size ('SAME'); no bias is added.

  Args:
    x: array of shape (N, H, W, C).
    kernel: a (kh, kw) array, used for every channel.

  Returns:
    An array with the shape and dtype of `x`.
  """
  channels = x.shape[-1]
  kh, kw = kernel.shape
  # HWIO layout with I = 1: one input channel per group, one group per channel.
  weights = np.broadcast_to(kernel[:, :, None, None], (kh, kw, 1, channels))
  return jax.lax.conv_general_dilated(
    x,
    jnp.asarray(weights, dtype=x.dtype),
    window_strides=(1, 1),
    padding=((kh // 2, kh // 2), (kw // 2, kw // 2)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    feature_group_count=channels,
  )


class SharpBlock(nn.Module):
  """Applies a constant depthwise 3x3 kernel to every channel.

  Attributes:
    kernel: 'laplacian' (the paper's, default), 'sharpen', 'blur', or a 3x3
      array-like. It is a constant of the computation, never a parameter.
    dtype: computation dtype; None keeps the input's dtype.
  """

  kernel: KernelSpec = 'laplacian'
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f'SharpBlock expects NHWC input, got shape {x.shape}.')
    if self.dtype is not None:
      x = x.astype(self.dtype)
    return depthwise_filter(x, make_kernel(self.kernel))
