"""Faster formulations of U-Net's 2x2 max-pool and 2x2 stride-2 transposed conv.

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
select-and-scatter); `UpConv2x2` sums the same products as `nn.ConvTranspose`
(equal up to float rounding) and has the same parameters and initialisation.
tests/fast_layers_test.py proves both.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

POOL_IMPLEMENTATIONS = ('reduce_window', 'reshape')
UPSAMPLE_IMPLEMENTATIONS = ('conv', 'dot')


def resolve(name: str, choices, cpu_choice: str, other_choice: str) -> str:
  """Maps 'auto' to `cpu_choice` on CPU, else `other_choice`; checks the name."""
  if name == 'auto':
    return cpu_choice if jax.default_backend() == 'cpu' else other_choice
  if name not in choices:
    raise ValueError(
      f'Unknown implementation {name!r}; use "auto" or one of {choices}.'
    )
  return name


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

  The gradient goes to the first maximum of each window in row-major order,
  exactly as XLA's select-and-scatter (the gradient of `nn.max_pool`).
  """
  x00, x01, x10, x11 = _windows(x)
  return jnp.maximum(jnp.maximum(x00, x01), jnp.maximum(x10, x11))


def _max_pool_fwd(x):
  y = max_pool_2x2(x)
  return y, (x, y)


def _max_pool_bwd(residuals, g):
  x, y = residuals
  taken = jnp.zeros(y.shape, jnp.bool_)
  parts = []
  for corner in _windows(x):
    # The first corner equal to the maximum wins; later ties get nothing.
    chosen = (corner == y) & ~taken
    taken = taken | chosen
    parts.append(jnp.where(chosen, g, jnp.zeros_like(g)))
  return (_interleave(parts),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jax.Array, implementation: str = 'auto') -> jax.Array:
  """2x2 stride-2 max-pool: 'reduce_window' (nn.max_pool), 'reshape' or 'auto'.

  'auto' is 'reshape' on CPU. Odd sides fall back to nn.max_pool.
  """
  name = resolve(implementation, POOL_IMPLEMENTATIONS, 'reshape', 'reduce_window')
  if name == 'reduce_window' or x.shape[1] % 2 or x.shape[2] % 2:
    return nn.max_pool(x, (2, 2), strides=(2, 2))
  return max_pool_2x2(x)


class UpConv2x2(nn.Module):
  """A 2x2 stride-2 'SAME' transposed convolution computed as one dot.

  Same parameters ('kernel' (2, 2, C, F) and 'bias' (F,)), initialisation and
  output as `nn.ConvTranspose(features, (2, 2), strides=(2, 2),
  padding='SAME')`: every input pixel becomes a 2x2 output block, pixel (a, b)
  of it being x @ kernel[1 - a, 1 - b] (ConvTranspose flips the kernel).

  Attributes:
    features: output channels.
    dtype: computation dtype; parameters stay float32.
    kernel_init: kernel initialiser.
    bias_init: bias initialiser.
  """

  features: int
  dtype: Any = jnp.float32
  kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param(
      'kernel', self.kernel_init, (2, 2, x.shape[-1], self.features), jnp.float32
    )
    bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    # One dot for all four output pixels of a block: (C, 4F), order (a, b, f).
    flipped = kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(x.shape[-1], -1)
    blocks = jnp.einsum('nhwc,cg->nhwg', x, flipped)
    f = self.features
    return _interleave([blocks[..., k * f : (k + 1) * f] for k in range(4)]) + bias
