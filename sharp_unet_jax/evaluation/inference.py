"""Overlap-tile prediction of images of any size (U-Net paper, Fig. 2).

The image is covered by a grid of tiles of one fixed shape that overlap by
`overlap` pixels; the image border is extended by mirroring (numpy's
'symmetric' padding), by overlap // 2 pixels and as far as a tile needs when
the image is smaller than a tile. Tiles are cut lazily from the integer image,
normalised like the training data, predicted `tile_batch` at a time by one
compiled function (so one compilation per tile shape), and their
probabilities are blended into a float32 canvas with Gaussian or constant
weights. Optional test-time augmentation averages the probabilities of the
tile and its three flips.

Memory is bounded by the tile batch and the image: besides the integer image,
only the canvas of the foreground probabilities is image-sized (1 channel for
a binary model, K - 1 for K classes, since the background is one minus their
sum). The blending weights of a tile grid are separable, so their sum is the
outer product of two vectors and never needs an image-sized array.
"""

import functools
import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np

from sharp_unet_jax.compilation import meshes, xla_options
from sharp_unet_jax.data import input_pipeline
from sharp_unet_jax.errors import UserError

BLENDS = ('gaussian', 'constant')
TTAS = ('none', 'flips')
# The Gaussian window's std as a fraction of the tile side (as in nnU-Net), and
# its floor per axis, so that every covered pixel has a positive weight.
_SIGMA_SCALE = 1.0 / 8
_MIN_WEIGHT = 1e-2
# Rows per chunk when turning probabilities into labels.
_ROW_CHUNK = 512


def mirror_indices(start: int, size: int, length: int) -> np.ndarray:
  """Source indices of positions start..start+size-1 of a mirrored signal.

  The signal of `length` samples is extended on both sides by repeated
  mirroring with the edge sample repeated, like np.pad(mode='symmetric').
  """
  positions = np.mod(np.arange(start, start + size), 2 * length)
  return np.where(positions < length, positions, 2 * length - 1 - positions)


def tile_starts(length: int, tile: int, overlap: int) -> np.ndarray:
  """Start positions of tiles covering [-overlap // 2, length + overlap // 2).

  Neighbouring tiles overlap by at least `overlap` pixels and are spread
  evenly. A side no longer than a tile gets one tile centred on the image.
  """
  margin = overlap // 2
  extent = length + 2 * margin
  if extent <= tile:
    return np.array([-((tile - length) // 2)])
  count = math.ceil((extent - tile) / (tile - overlap)) + 1
  return np.round(np.linspace(-margin, length + margin - tile, count)).astype(int)


def window_1d(size: int, blend: str) -> np.ndarray:
  """Blending weights along one tile side: Gaussian or constant (ones)."""
  if blend == 'constant':
    return np.ones(size, np.float32)
  centre = (size - 1) / 2
  sigma = size * _SIGMA_SCALE
  weights = np.exp(-0.5 * ((np.arange(size) - centre) / sigma) ** 2)
  return np.maximum(weights / weights.max(), _MIN_WEIGHT).astype(np.float32)


def default_overlap(tile_size: Sequence[int]) -> int:
  """A quarter of the smaller tile side, at most 32 pixels."""
  return min(32, min(tile_size) // 4)


def _weight_sums(length: int, starts: np.ndarray, window: np.ndarray) -> np.ndarray:
  """Sum over tiles of the 1-D window at each of `length` positions."""
  sums = np.zeros(length, np.float64)
  for start in starts:
    lo, hi = max(start, 0), min(start + len(window), length)
    sums[lo:hi] += window[lo - start : hi - start]
  return sums.astype(np.float32)


def _forward(params, images, window, *, apply_fn, num_classes: int, tta: str):
  """Weighted foreground probabilities of a batch of tiles."""
  if tta == 'flips':
    batch = images.shape[0]
    flipped = jnp.concatenate(
      [images, images[:, ::-1], images[:, :, ::-1], images[:, ::-1, ::-1]]
    )
    logits = apply_fn(params, flipped)
    parts = [logits[i * batch : (i + 1) * batch] for i in range(4)]
    parts = [parts[0], parts[1][:, ::-1], parts[2][:, :, ::-1], parts[3][:, ::-1, ::-1]]
    logits = jnp.stack(parts)
  else:
    logits = apply_fn(params, images)[None]
  if num_classes == 1:
    probs = jax.nn.sigmoid(logits)
  else:
    probs = jax.nn.softmax(logits, axis=-1)[..., 1:]
  return jnp.mean(probs, axis=0) * window[None, :, :, None]


def tile_forward(apply_fn, num_classes: int, tta: str, mesh: jax.sharding.Mesh):
  """The jitted (params, tiles, window) -> weighted probabilities of a tile
  batch: params and window replicated over `mesh`, tiles split over it."""
  replicated = NamedSharding(mesh, PartitionSpec())
  tiles = NamedSharding(mesh, PartitionSpec(meshes.AXIS))
  return jax.jit(
    functools.partial(_forward, apply_fn=apply_fn, num_classes=num_classes, tta=tta),
    in_shardings=(replicated, tiles, replicated),
    out_shardings=tiles,
    compiler_options=xla_options.compute_options(meshes.platform(mesh)),
  )


def _checked_overlap(tile_size, depth, overlap, tile_batch, devices, blend, tta):
  """The overlap to use (None: the default); UserError for settings that fail."""
  factor = 2**depth
  if len(tile_size) != 2 or any(s <= 0 or s % factor for s in tile_size):
    raise UserError(
      f'--tile_size={",".join(map(str, tile_size))} must be two positive '
      f'multiples of 2**depth = {factor}.'
    )
  if overlap is None:
    overlap = default_overlap(tile_size)
  if not 0 <= overlap < min(tile_size):
    raise UserError(
      f'--overlap={overlap} must be at least 0 and less than the tile side '
      f'{min(tile_size)}.'
    )
  if tile_batch <= 0 or tile_batch % devices:
    raise UserError(
      f'--tile_batch={tile_batch} must be a positive multiple of the number '
      f'of devices ({devices}).'
    )
  if blend not in BLENDS:
    raise UserError(f'--blend={blend!r} must be one of {", ".join(BLENDS)}.')
  if tta not in TTAS:
    raise UserError(f'--tta={tta!r} must be one of {", ".join(TTAS)}.')
  return overlap


class TiledPredictor:
  """Predicts images of any size tile by tile with a fixed tile shape.

  Attributes:
    tile_size: (height, width) of the tiles.
    overlap: pixels shared by neighbouring tiles.
    tile_batch: tiles per model call.
    num_classes: the model's num_classes (1 = binary).
  """

  def __init__(
    self,
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    *,
    num_classes: int,
    depth: int,
    tile_size: Sequence[int],
    overlap: Optional[int] = None,
    tile_batch: int = 4,
    blend: str = 'gaussian',
    tta: str = 'none',
    mesh: Optional[jax.sharding.Mesh] = None,
  ):
    """Checks the tiling settings and compiles nothing yet.

    Args:
      apply_fn: (params, float images NHWC) -> logits NHWC.
      params: the model parameters.
      num_classes: 1 for a sigmoid head, K for a K-class softmax head.
      depth: the model's pooling levels; tile sides must divide by 2**depth.
      tile_size: (height, width) of a tile.
      overlap: pixels shared by neighbouring tiles, below the tile sides;
        None: default_overlap(tile_size).
      tile_batch: tiles per model call.
      blend: 'gaussian' or 'constant' blending weights.
      tta: 'none', or 'flips' to average over the horizontal, vertical and
        both flips.
      mesh: the ('data',) mesh the tile batches are split over; None: the
        default device alone.

    Raises:
      UserError: for settings that cannot work.
    """
    self.tile_size = tuple(int(s) for s in tile_size)
    mesh = meshes.data_mesh(jax.local_devices()[:1]) if mesh is None else mesh
    overlap = _checked_overlap(
      self.tile_size, depth, overlap, tile_batch, mesh.size, blend, tta
    )
    self.overlap = int(overlap)
    self.tile_batch = int(tile_batch)
    self.num_classes = int(num_classes)
    self._windows = [window_1d(s, blend) for s in self.tile_size]
    window = np.outer(*self._windows).astype(np.float32)
    replicated = NamedSharding(mesh, PartitionSpec())
    self._tiles = NamedSharding(mesh, PartitionSpec(meshes.AXIS))
    self._params = jax.device_put(params, replicated)
    self._window = jax.device_put(window, replicated)
    self._forward = tile_forward(apply_fn, num_classes, tta, mesh)

  @property
  def num_outputs(self) -> int:
    """Channels of the probability canvas (foreground classes)."""
    return 1 if self.num_classes == 1 else self.num_classes - 1

  def compile_count(self) -> int:
    """How many tile shapes have been compiled so far."""
    return self._forward._cache_size()  # pylint: disable=protected-access

  def tiles(self, height: int, width: int) -> list[tuple[int, int]]:
    """Top-left corners (row, column) of the tiles of an image."""
    rows = tile_starts(height, self.tile_size[0], self.overlap)
    cols = tile_starts(width, self.tile_size[1], self.overlap)
    return [(int(r), int(c)) for r in rows for c in cols]

  def _cut(self, pixels: np.ndarray, corners) -> np.ndarray:
    """Mirrored tiles at `corners`, normalised, padded to a full batch."""
    height, width, channels = pixels.shape
    tile_h, tile_w = self.tile_size
    batch = np.zeros((self.tile_batch, tile_h, tile_w, channels), pixels.dtype)
    for i, (row, col) in enumerate(corners):
      rows = mirror_indices(row, tile_h, height)
      cols = mirror_indices(col, tile_w, width)
      batch[i] = pixels[rows[:, None], cols[None, :]]
    return input_pipeline.normalize(batch)

  def _add(self, canvas: np.ndarray, weighted, corners) -> None:
    """Adds weighted tile probabilities into the canvas, cropped to the image."""
    weighted = np.asarray(weighted)
    height, width = canvas.shape[:2]
    tile_h, tile_w = self.tile_size
    for i, (row, col) in enumerate(corners):
      r0, r1 = max(row, 0), min(row + tile_h, height)
      c0, c1 = max(col, 0), min(col + tile_w, width)
      canvas[r0:r1, c0:c1] += weighted[i, r0 - row : r1 - row, c0 - col : c1 - col]

  def predict(self, pixels: np.ndarray) -> np.ndarray:
    """Foreground probabilities of one image.

    Args:
      pixels: (H, W, C) uint8 or uint16 image with the model's channels.

    Returns:
      float32 (H, W, 1) sigmoid probabilities for a binary model, or
      (H, W, K - 1) softmax probabilities of classes 1..K-1.

    Raises:
      ValueError: if `pixels` is not an integer (H, W, C) array.
    """
    if pixels.ndim != 3 or not np.issubdtype(pixels.dtype, np.integer):
      raise ValueError(
        f'Expected integer (H, W, C) pixels, got {pixels.dtype} {pixels.shape}.'
      )
    height, width = pixels.shape[:2]
    canvas = np.zeros((height, width, self.num_outputs), np.float32)
    corners = self.tiles(height, width)
    pending = None
    for start in range(0, len(corners), self.tile_batch):
      chunk = corners[start : start + self.tile_batch]
      # Dispatch this batch before adding the last one: JAX runs it meanwhile.
      tiles = jax.device_put(self._cut(pixels, chunk), self._tiles)
      weighted = self._forward(self._params, tiles, self._window)
      if pending is not None:
        self._add(canvas, *pending)
      pending = (weighted, chunk)
    self._add(canvas, *pending)
    rows = tile_starts(height, self.tile_size[0], self.overlap)
    cols = tile_starts(width, self.tile_size[1], self.overlap)
    canvas /= _weight_sums(height, rows, self._windows[0])[:, None, None]
    canvas /= _weight_sums(width, cols, self._windows[1])[None, :, None]
    return np.clip(canvas, 0.0, 1.0, out=canvas)  # Undo rounding past 1.


def to_labels(probabilities: np.ndarray, num_classes: int) -> np.ndarray:
  """Class indices (H, W) uint8 from a foreground probability canvas.

  Binary: probability > 0.5 (logit > 0), as in training's metrics. K classes:
  argmax over the background (one minus the rest) and classes 1..K-1.
  """
  height = probabilities.shape[0]
  labels = np.empty(probabilities.shape[:2], np.uint8)
  for r0 in range(0, height, _ROW_CHUNK):
    part = probabilities[r0 : r0 + _ROW_CHUNK]
    if num_classes == 1:
      labels[r0 : r0 + _ROW_CHUNK] = part[..., 0] > 0.5
    else:
      labels[r0 : r0 + _ROW_CHUNK] = np.argmax(all_classes(part), axis=-1)
  return labels


def all_classes(probabilities: np.ndarray) -> np.ndarray:
  """(H, W, K) probabilities of all classes from the K - 1 foreground ones."""
  background = 1.0 - probabilities.sum(axis=-1, keepdims=True)
  return np.concatenate([np.maximum(background, 0.0), probabilities], axis=-1)
