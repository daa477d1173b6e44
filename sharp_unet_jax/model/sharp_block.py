"""The Sharp block: a fixed depthwise 3x3 filter applied to skip connections.

Sharp U-Net (Zunair and Ben Hamza, 2021) convolves every encoder feature map
with one constant 3x3 kernel, channel by channel, before it is concatenated
with the decoder features. The kernel is not learned: here it is built in code
at trace time, so it never enters the parameter tree, the optimiser state or a
checkpoint.

Example, inside any Flax model::

  skip = SharpBlock(kernel='laplacian')(features)   # same shape as features
"""

import functools
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


def depthwise_filter(
  x: jax.Array, kernel: np.ndarray, dense: bool = False
) -> jax.Array:
  """Convolves every channel of NHWC `x` with the same 2-D `kernel`.

  This is the reference formulation: one grouped convolution.

  Zero padding keeps the spatial size ('SAME'); no bias is added.

  Args:
    x: array of shape (N, H, W, C).
    kernel: a (kh, kw) array, used for every channel.
    dense: store the per-channel kernel whole in the program, rather than as
      a broadcast of `kernel`. XLA:GPU folds a whole constant into the
      program but runs a kernel to broadcast one for each Sharp block; XLA:TPU
      builds the broadcast on chip, cheaper than reading the whole constant.

  Returns:
    An array with the shape and dtype of `x`.
  """
  channels = x.shape[-1]
  kh, kw = kernel.shape
  # HWIO layout with I = 1: one input channel per group, one group per channel.
  weights = kernel[:, :, None, None]
  if dense:
    weights = np.tile(weights, (1, 1, 1, channels))
  else:
    weights = np.broadcast_to(weights, (kh, kw, 1, channels))
  return jax.lax.conv_general_dilated(
    x,
    jnp.asarray(weights, dtype=x.dtype),
    window_strides=(1, 1),
    padding=((kh // 2, kh // 2), (kw // 2, kw // 2)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    feature_group_count=channels,
  )


def shifted_sum_filter(x: jax.Array, kernel: np.ndarray) -> jax.Array:
  """Same result as `depthwise_filter`, as a sum of shifted, scaled copies of x.

  Because the kernel is a constant, the filter is a weighted sum of at most nine
  shifted views of the zero-padded input (zero taps are skipped). XLA fuses
  it, and its gradient, into single elementwise loops, which on CPU is several
  times faster than its grouped convolution. It agrees with `depthwise_filter`
  up to float rounding (the summation order differs).
  """
  kh, kw = kernel.shape
  height, width = x.shape[1], x.shape[2]
  padded = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  out = jnp.zeros_like(x)
  for i in range(kh):
    for j in range(kw):
      weight = float(kernel[i, j])
      if weight != 0.0:
        out = out + weight * padded[:, i : i + height, j : j + width, :]
  return out


IMPLEMENTATIONS = {
  'conv': depthwise_filter,
  'conv_dense_kernel': functools.partial(depthwise_filter, dense=True),
  'shifted_sum': shifted_sum_filter,
}


def sharp_filter(x: jax.Array, kernel: np.ndarray, implementation: str) -> jax.Array:
  """Applies `kernel` to every channel of `x` in the named formulation.

  Args:
    x: array of shape (N, H, W, C).
    kernel: a (kh, kw) array, used for every channel.
    implementation: 'conv' (the grouped convolution), 'conv_dense_kernel'
      (the same, its kernel a whole constant: see depthwise_filter),
      'shifted_sum' (the same filter as fused shifted adds, faster on CPU)
      or 'auto': shifted_sum in
      programs compiled for CPU, conv in those for GPU and TPU. 'auto' is
      decided by `jax.lax.platform_dependent` when the program is lowered, so
      it follows the platform compiled or exported for, never the host's.

  Raises:
    ValueError: for an unknown implementation.
  """
  if implementation == 'auto':
    return jax.lax.platform_dependent(
      x,
      cpu=lambda x: shifted_sum_filter(x, kernel),
      default=lambda x: depthwise_filter(x, kernel),
    )
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
      f'Unknown sharp block implementation {implementation!r}; use "auto" or '
      f'one of {sorted(IMPLEMENTATIONS)}.'
    )
  return IMPLEMENTATIONS[implementation](x, kernel)


class SharpBlock(nn.Module):
  """Applies a constant depthwise 3x3 kernel to every channel.

  Attributes:
    kernel: 'laplacian' (the paper's, default), 'sharpen', 'blur', or a 3x3
      array-like. It is a constant of the computation, never a parameter.
    dtype: computation dtype; None keeps the input's dtype.
    implementation: 'conv' (default: `lax.conv_general_dilated` with
      `feature_group_count`, the design's op), 'conv_dense_kernel' (the same
      with its kernel stored whole, for GPU programs), 'shifted_sum' (the
      same filter as fused shifted adds, faster on CPU) or 'auto' (shifted_sum in CPU
      programs, conv in GPU and TPU programs; see `sharp_filter`).
  """

  kernel: KernelSpec = 'laplacian'
  dtype: Any = None
  implementation: str = 'conv'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return sharpen(x, self.kernel, self.dtype, self.implementation)


def sharpen(x: jax.Array, kernel: KernelSpec, dtype: Any, implementation: str):
  """The Sharp block: `kernel` applied to every channel of NHWC `x`, in `dtype`
  (None: x's); what the Linen and the NNX SharpBlock compute.

  Raises:
    ValueError: for an input that is not NHWC, an unknown kernel or
      implementation.
  """
  if x.ndim != 4:
    raise ValueError(f'SharpBlock expects NHWC input, got shape {x.shape}.')
  if dtype is not None:
    x = x.astype(dtype)
  return sharp_filter(x, make_kernel(kernel), implementation)
