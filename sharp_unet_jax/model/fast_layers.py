"""Faster CPU formulations of U-Net's 2x2 max-pool and 2x2 stride-2 up-conv.

XLA:CPU runs two U-Net ops far below its convolution speed:

- the gradient of `nn.max_pool` is a select-and-scatter, about 4x slower than
  elementwise code on the same data;
- `nn.ConvTranspose` is lowered as an input-dilated convolution; its gradients
  take 10-20x longer than the equivalent matmul.

Both ops have non-overlapping 2x2 windows, so each can be written with strided
slices, elementwise selects, interior padding and one dot, which XLA fuses and
runs at matmul speed (no reshapes, so batch-sharded arrays work). The
results are those of the reference ops: `max_pool_2x2` returns identical values
and gradients (the first maximum of a window gets the gradient, as in XLA's
select-and-scatter); `upconv` as a dot sums the same products as
`nn.ConvTranspose` (equal up to float rounding). tests/fast_layers_test.py
proves both. Each form of the network (network.FORMS) names the op it takes;
network.platform_forward picks the form per target platform.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

POOL_IMPLEMENTATIONS = ('reduce_window', 'strided_slices')
UPSAMPLE_IMPLEMENTATIONS = ('conv', 'dot', 'conv_transposed_kernel')


def check_name(name: str, choices) -> None:
  """Raises ValueError unless `name` is one of `choices`."""
  if name not in choices:
    raise ValueError(f'Unknown implementation {name!r}; use one of {choices}.')


def _windows(x: jax.Array) -> list[jax.Array]:
  """The four (N, H/2, W/2, C) corners of 2x2 windows, in row-major order."""
  return [x[:, a::2, b::2, :] for a in range(2) for b in range(2)]


def _interleave(parts: list[jax.Array]) -> jax.Array:
  """Inverse of `_windows`: four (N, h, w, C) arrays -> (N, 2h, 2w, C).

  Written as interior-padded sums rather than reshapes, so it works on
  batch-sharded arrays and fuses into one elementwise loop.
  """
  out = None
  zero = jnp.zeros((), parts[0].dtype)
  for k, part in enumerate(parts):
    a, b = divmod(k, 2)
    config = ((0, 0, 0), (a, 1 - a, 1), (b, 1 - b, 1), (0, 0, 0))
    padded = jax.lax.pad(part, zero, config)
    out = padded if out is None else out + padded
  return out


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 stride-2 max-pool of NHWC `x` with even sides; equals nn.max_pool.

  Its gradient goes to the first maximum of each window, exactly as XLA's
  select-and-scatter (the gradient of `nn.max_pool`)."""
  x00, x01, x10, x11 = _windows(x)
  return jnp.maximum(jnp.maximum(x00, x01), jnp.maximum(x10, x11))


def _pool_forward(x):
  y = max_pool_2x2(x)
  return y, (x, y)


def _pool_backward(residuals, g):
  x, y = residuals
  taken = jnp.zeros(y.shape, jnp.bool_)
  parts = []
  for corner in _windows(x):
    # The first corner equal to the maximum wins; later ties get nothing.
    chosen = (corner == y) & ~taken
    taken = taken | chosen
    parts.append(jnp.where(chosen, g, jnp.zeros_like(g)))
  return (_interleave(parts),)


max_pool_2x2.defvjp(_pool_forward, _pool_backward)


def _reduce_window_pool(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def max_pool(x: jax.Array, implementation: str = 'reduce_window') -> jax.Array:
  """2x2 stride-2 max-pool: 'reduce_window' (nn.max_pool) or 'strided_slices'.

  Odd sides fall back to nn.max_pool.
  """
  check_name(implementation, POOL_IMPLEMENTATIONS)
  if implementation == 'reduce_window' or x.shape[1] % 2 or x.shape[2] % 2:
    return _reduce_window_pool(x)
  return max_pool_2x2(x)


def _upconv_dot(x, kernel):
  """The transposed convolution as one dot, the four block pixels interleaved."""
  features = kernel.shape[-1]
  # One dot for all four output pixels of a block: (C, 4F), order (a, b, f).
  flipped = kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(x.shape[-1], -1)
  blocks = jnp.einsum('nhwc,cg->nhwg', x, flipped)
  parts = [blocks[..., k * features : (k + 1) * features] for k in range(4)]
  return _interleave(parts)


def _upconv_conv(x, kernel):
  """The transposed convolution as nn.ConvTranspose computes it."""
  return jax.lax.conv_transpose(x, kernel, (2, 2), 'SAME')


def _upconv_transposed_kernel(x, kernel):
  """The same transposed convolution, written as the input gradient of a
  stride-2 convolution whose kernel is `kernel` flipped, inputs and outputs
  swapped (lax.conv_transpose(..., transpose_kernel=True) flips it back).

  Equal to _upconv_conv (the same products and sums), but XLA's GPU compiler
  recognises the flipped kernel and runs it as cuDNN's data-gradient
  convolution on x, where _upconv_conv becomes a forward convolution over x
  dilated to 4x its pixels (materialised by a padding kernel): 4x the FLOPs
  and the bytes of the dilated copy."""
  swapped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
  return jax.lax.conv_transpose(x, swapped, (2, 2), 'SAME', transpose_kernel=True)


_UPCONV_FORMS = {
  'conv': _upconv_conv,
  'dot': _upconv_dot,
  'conv_transposed_kernel': _upconv_transposed_kernel,
}


def upconv(x: jax.Array, kernel: jax.Array, implementation: str) -> jax.Array:
  """The 2x2 stride-2 'SAME' transposed convolution (no bias) of `x` with
  `kernel` (2, 2, C, F): 'conv' (as nn.ConvTranspose), 'dot' (about 10x
  faster gradients on CPU) or 'conv_transposed_kernel' (for GPUs).

  As a dot, every input pixel becomes a 2x2 output block, pixel (a, b) of it
  being x @ kernel[1 - a, 1 - b] (ConvTranspose flips the kernel)."""
  check_name(implementation, UPSAMPLE_IMPLEMENTATIONS)
  return _UPCONV_FORMS[implementation](x, kernel)
