"""U-Net's narrow levels with several images side by side in the lanes.

TPU layouts keep a convolution's channels in the minor dimension, 128 lanes
wide, so a level with C < 128 channels is padded to 128: level 0 of the
paper's model (32 channels) moves four times its size, level 1 twice.
Packing f images of a device's batch into the lanes, (N, H, W, C) ->
(N/f, H, W, f C) in (image, channel) order, fills them. No op of a U-Net
mixes images, so each has an exact packed form:

- a convolution (3x3, the 2x2 stride-2 up-convolution, the 1x1 head) has the
  block-diagonal kernel diag(K, ..., K), built from K in the forward pass by
  a 0/1 mask (f times the FLOPs, which the memory-bound levels can afford);
  the parameter stays K, so the gradient reaching it is the sum over images;
- the Sharp block is the same depthwise convolution with the constant kernel,
  over f C channels instead of C;
- the max-pool is the same max-pool.

Images enter the lanes once (the 3-channel input) and leave once (the
logits). Each deeper level, with twice the channels, packs half as many
images, as many as fill the 128 lanes without exceeding them: the level's
first convolution runs in its input's packing and `unpack` hands half of
each pack back to the batch dimension, whole 128-lane tiles; the decoder
`pack`s them again before the up-convolution. (Keeping one packing for all
levels moves f^2 times each kernel's bytes at the deeper ones, 3.2x
Keras's estimated time in configs/default.py's predict step; a grouped
convolution with one group per image, instead of block-diagonal kernels,
got TPU layouts moving more HBM bytes than the reference form:
docs/performance.md.)
"""

import jax
import jax.numpy as jnp

# LANES: the TPU lane width; levels with fewer channels are packed.
LANES = 128


def images_per_pack(x: jax.Array, channels: int) -> int:
  """f: the largest power of two with f * channels <= LANES that divides x's
  batch (1 if the batch size is symbolic). Within `network.per_device`, x's batch
  is one device's."""
  if not isinstance(x.shape[0], int):
    return 1
  f = 1
  while 2 * f * channels <= LANES and x.shape[0] % (2 * f) == 0:
    f *= 2
  return f


def pack(x: jax.Array, f: int) -> jax.Array:
  """(N, H, W, C) -> (N/f, H, W, f C), lanes in (image, channel) order:
  images n f .. n f + f - 1 go to pack n. Of packs of g images, it makes
  packs of f g images, in the same order as packing f g images at once."""
  if f == 1:
    return x
  n, h, w, c = x.shape
  x = x.reshape(n // f, f, h, w, c).transpose(0, 2, 3, 1, 4)
  return x.reshape(n // f, h, w, f * c)


def unpack(x: jax.Array, f: int) -> jax.Array:
  """Inverse of `pack`: (N/f, H, W, f C) -> (N, H, W, C); of packs of f g
  images, it makes packs of g."""
  if f == 1:
    return x
  m, h, w, fc = x.shape
  x = x.reshape(m, h, w, f, fc // f).transpose(0, 3, 1, 2, 4)
  return x.reshape(m * f, h, w, fc // f)


def block_diagonal(kernel: jax.Array, f: int) -> jax.Array:
  """(..., I, O) -> (..., f I, f O): diag(K, ..., K), one block per image.
  Its entries are K's and exact zeros, so a packed convolution sums the
  same products as f plain ones.

  Built by concatenating K and zero blocks, which XLA:TPU writes straight
  into the kernel's tiled layout; as eye x K reshaped from (..., f, I, f, O),
  it broadcast and relaid out a 6-d array per kernel (51 MB of the 804 MB
  that configs/default.py's v4 float32 train step accessed).
  """
  if f == 1:
    return kernel
  zeros = jnp.zeros_like(kernel)
  rows = [
    jnp.concatenate([kernel if i == j else zeros for j in range(f)], axis=-1)
    for i in range(f)
  ]
  return jnp.concatenate(rows, axis=-2)


def bias(b: jax.Array, f: int) -> jax.Array:
  """The bias of f packed images, (f O,)."""
  return b if f == 1 else jnp.tile(b, f)
