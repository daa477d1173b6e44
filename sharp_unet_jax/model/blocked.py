"""U-Net's narrow, wide levels on a 2x2 space-to-depth ('blocked') layout.

TPU vector registers and XLA's TPU layouts are 128 lanes wide in the minor
(channel) dimension of a convolution. A level with C < 128 channels, such as
level 0 of the paper's model (192x256 pixels, 32 channels), is padded to 128
lanes: four times its size in memory traffic. Seen as 2x2 blocks, the same
tensor is (H/2, W/2, 4C): 128 dense channels, no padding, a quarter of the
positions. Every op of such a level has an exact blocked form:

- a 3x3 'SAME' convolution with kernel K (3, 3, I, O) is a 3x3 convolution
  over blocks with kernel (3, 3, 4I, 4O), built here from K in the forward
  pass (`blocked_conv_kernel`; mostly zeros, so 4x the FLOPs, which a
  memory-bound level can afford); the parameter stays K;
- the Sharp block stays a grouped convolution with the constant kernel: one
  group per channel, each group mapping the 4 pixels of a block to 4;
- the 2x2 max-pool is a max over the four pixels of each block (its result
  is a plain, unblocked array at half the resolution);
- the 2x2 stride-2 up-convolution writes each input pixel's 2x2 output block,
  i.e. one dot from C to 4F channels, straight into the blocked layout;
- the 1x1 head is a 1x1 convolution with a block-diagonal kernel.

Channel order of a blocked array is (row in block, column in block, channel):
element [n, i, j, (2a + b) C + c] is pixel [n, 2i + a, 2j + b, c], so the
channel stays the minor dimension of every array, kernels included. The
Sharp block's groups need a channel's four pixels adjacent: it reorders its
input to (c, a, b), and the next convolution's kernel reads its output in
that order.

All functions sum the same products as the plain ops (equal up to float
rounding; tests/blocked_test.py); kernels are rearranged by gathers and
masks, never by a matmul, so no rounding enters them.
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np

from sharp_unet_jax.model import fast_layers

# LANES: the TPU lane width; levels with fewer channels are blocked.
LANES = 128


def _reshape(x: jax.Array, shape) -> jax.Array:
  """Reshapes the dimensions after the first; the first (the batch) keeps
  its sharding, which an explicitly sharded array must be told."""
  sharding = jax.typeof(x).sharding
  spec = getattr(sharding, 'spec', None)
  if not spec or spec[0] is None:
    return x.reshape(shape)
  batch = NamedSharding(sharding.mesh, PartitionSpec(spec[0]))
  return jax.lax.reshape(x, shape, out_sharding=batch)


def space_to_depth(x: jax.Array) -> jax.Array:
  """(N, H, W, C) -> (N, H/2, W/2, 4C), channel order (a, b, c)."""
  n, h, w, c = x.shape
  x = _reshape(x, (n, h // 2, 2, w // 2, 2, c))
  return _reshape(x.transpose(0, 1, 3, 2, 4, 5), (n, h // 2, w // 2, 4 * c))


def depth_to_space(x: jax.Array) -> jax.Array:
  """Inverse of `space_to_depth`: (N, h, w, 4C) -> (N, 2h, 2w, C)."""
  n, h, w, c4 = x.shape
  x = _reshape(x, (n, h, w, 2, 2, c4 // 4))
  return _reshape(x.transpose(0, 1, 3, 2, 4, 5), (n, 2 * h, 2 * w, c4 // 4))


def channel_major(x: jax.Array) -> jax.Array:
  """Blocked channel order (a, b, c) -> (c, a, b)."""
  n, h, w, c4 = x.shape
  x = _reshape(x, (n, h, w, 4, c4 // 4))
  return _reshape(x.transpose(0, 1, 2, 4, 3), (n, h, w, c4))


def _tap_index() -> np.ndarray:
  """[p, a, A] -> the 3x3 tap d linking input pixel a of block offset p - 1
  to output pixel A (d = 2p + a - A - 1), or 3 (a zero tap) if none."""
  p, a, big_a = np.meshgrid(range(3), range(2), range(2), indexing='ij')
  d = 2 * p + a - big_a - 1
  return np.where((d >= 0) & (d <= 2), d, 3)


def _block_taps(kernel):
  """[p, q, a, b, A, B, I, O]: the tap of `kernel` (3, 3, I, O) or zero."""
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  taps = _tap_index()
  return padded[taps[:, None, :, None, :, None], taps[None, :, None, :, None, :]]


def blocked_conv_kernel(kernel: jax.Array, parts=None) -> jax.Array:
  """The (3, 3, 4I, 4O) block kernel of a (3, 3, I, O) 'SAME' kernel.

  Outputs are in (A, B, o) order. The blocked input may be a concatenation
  of blocked arrays: `parts` lists (channels, channel_major) for each, in
  order (None: one pixel-major part); a part is in (a, b, i) order, or in
  (i, a, b) order if channel_major (the Sharp block's output). The output
  channel stays minor in every intermediate, so no array has a tiny minor
  dimension, which TPU layouts would pad to 128 lanes.
  """
  _, _, cin, cout = kernel.shape
  taps = _block_taps(kernel)
  pieces, start = [], 0
  for channels, major in parts or [(cin, False)]:
    piece = taps[..., start : start + channels, :]
    start += channels
    # (p, q, a, b, A, B, i, o) -> (p, q, i, a, b, A, B, o) or (p, q, a, b, i, A, B, o).
    order = (0, 1, 6, 2, 3, 4, 5, 7) if major else (0, 1, 2, 3, 6, 4, 5, 7)
    pieces.append(piece.transpose(order).reshape(3, 3, 4 * channels, 4 * cout))
  return jnp.concatenate(pieces, axis=2) if len(pieces) > 1 else pieces[0]


def conv3x3(x: jax.Array, kernel: jax.Array, bias: jax.Array, parts=None) -> jax.Array:
  """A 3x3 'SAME' convolution plus bias of blocked `x` (made of `parts`, see
  `blocked_conv_kernel`); blocked result."""
  y = jax.lax.conv_general_dilated(
    x,
    blocked_conv_kernel(kernel, parts),
    window_strides=(1, 1),
    padding=((1, 1), (1, 1)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )
  return y + jnp.tile(bias, 4)


def sharp_filter(x: jax.Array, kernel: np.ndarray) -> jax.Array:
  """The Sharp block's depthwise 3x3 filter of blocked `x`, as a grouped
  convolution with one group per channel, mapping the 4 pixels of a block to
  4; the result is in channel-major (c, a, b) order."""
  channels = x.shape[-1] // 4
  block = np.zeros((4, 4), np.float32)
  block[:3, :3] = kernel
  taps = _tap_index()
  weights = block[taps[:, None, :, None, :, None], taps[None, :, None, :, None, :]]
  # (p, q, a, b, A, B) -> (3, 3, 4 inputs per group, 4 outputs), then one
  # copy of the 4 outputs per channel.
  weights = np.tile(weights.reshape(3, 3, 4, 4), (1, 1, 1, channels))
  return jax.lax.conv_general_dilated(
    channel_major(x),
    jnp.asarray(weights, x.dtype),
    window_strides=(1, 1),
    padding=((1, 1), (1, 1)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    feature_group_count=channels,
  )


def _corners(x: jax.Array) -> list[jax.Array]:
  """The four (N, h, w, C) pixels of each block, in row-major order."""
  channels = x.shape[-1] // 4
  return [x[..., k * channels : (k + 1) * channels] for k in range(4)]


# 2x2 max-pool of blocked `x`: a plain (N, h, w, C) array; the gradient of
# nn.max_pool (first maximum of a window in row-major order).
max_pool = fast_layers.corner_max_pool(
  _corners, functools.partial(jnp.concatenate, axis=-1)
)


def upconv(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """2x2 stride-2 'SAME' transposed convolution of plain `x` (the kernel of
  nn.ConvTranspose, (2, 2, C, F)): each pixel becomes its output block, so
  the result is blocked (N, H, W, 4F)."""
  cin, features = kernel.shape[2], kernel.shape[3]
  # Output pixel (a, b) of a block is x @ kernel[1 - a, 1 - b]; order (a, b, f).
  weights = kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(cin, 4 * features)
  return jnp.einsum('nhwc,cg->nhwg', x, weights) + jnp.tile(bias, 4)


def head(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """A 1x1 convolution (kernel (1, 1, C, K)) of blocked `x`; blocked result."""
  cin, cout = kernel.shape[2], kernel.shape[3]
  eye = jnp.eye(4, dtype=kernel.dtype)
  # (s, t) x (c, k) -> ((s, c), (t, k)): block diagonal, entries exact.
  weights = eye[:, None, :, None] * kernel[0, 0][None, :, None, :]
  y = jnp.einsum('nhwc,cg->nhwg', x, weights.reshape(4 * cin, 4 * cout))
  return y + jnp.tile(bias, 4)
