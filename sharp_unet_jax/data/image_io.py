"""Reading images for inference and naming output files safely.

Images are PNG, JPEG or TIFF of any size: grey, grey + alpha, RGB, RGBA or
palette, 8- or 16-bit. They become (H, W, C) uint8 or uint16 arrays with the
model's channels, converted by `channels.to_channels` as training does;
`input_pipeline.normalize` then scales them to [0, 1] by their dtype's
maximum, also as training does.

Every unreadable file (empty, truncated, corrupt, not an image, or larger
than Pillow's decompression-bomb limit `PIL.Image.MAX_IMAGE_PIXELS`) raises
`BadDataError` naming the file.
"""

import os
import re

import numpy as np

from sharp_unet_jax.data import channels, input_pipeline
from sharp_unet_jax.data.datasets import common
from sharp_unet_jax.errors import BadDataError, UserError

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.tif', '.tiff')
# Longest output name kept (bytes of the stem), well under file-system limits.
_MAX_STEM = 150


def read_image(path: str, num_channels: int) -> np.ndarray:
  """Reads an image file as (H, W, num_channels) uint8 or uint16 pixels.

  Decoding is the data set builders' (`datasets.common.decode_image`: Pillow
  or tifffile, with the decompression-bomb limit); 8-bit and palette sources
  stay 8-bit, others become 16-bit, alpha is dropped and the channels are
  converted by `channels.to_channels`, as for training.

  Args:
    path: a PNG, JPEG or TIFF file (TIFF: the first page).
    num_channels: the model's channels: 1 (grey) or 3 (RGB).

  Raises:
    BadDataError: naming the file, if it cannot be read as an image.
  """
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise BadDataError(f'Cannot read {path}: {e.strerror}.') from e
  if not data:
    raise BadDataError(f'{path} is empty (0 bytes).')
  try:
    decoded = common.decode_image(data, path)
  except MemoryError as e:
    raise BadDataError(f'{path} is too large to decode in memory.') from e
  eight_bit = decoded.palette is not None or decoded.array.dtype in (np.uint8, bool)
  # channels=0: keep the file's own channels (alpha dropped); converted below.
  array = common.to_image(decoded, 0, np.uint8 if eight_bit else np.uint16, path)
  try:
    array = channels.to_channels(array[None], num_channels)[0]
  except UserError as e:
    raise BadDataError(f'{path}: {e}') from e
  return np.ascontiguousarray(array)


def to_float(pixels: np.ndarray) -> np.ndarray:
  """Integer pixels -> float32 in [0, 1], as training normalises them."""
  return input_pipeline.normalize(pixels)


def safe_stem(name: str) -> str:
  """A file name stem that is one plain path component.

  Characters other than letters, digits, '.', '-' and '_' become '_', leading
  dots are dropped (so '..' or '.hidden' cannot name a parent or hidden
  file), and long names are shortened.
  """
  stem = re.sub(r'[^A-Za-z0-9._-]', '_', name).lstrip('.')
  return stem[:_MAX_STEM] or '_'


def make_output_dir(output_dir: str) -> None:
  """Creates `output_dir` (and its parents) if needed.

  Raises:
    UserError: naming the folder, if it cannot be created.
  """
  try:
    os.makedirs(output_dir, exist_ok=True)
  except OSError as e:
    message = f'--output_dir={output_dir} cannot be created: {e.strerror}.'
    raise UserError(message) from e


def output_path(output_dir: str, stem: str, suffix: str) -> str:
  """Path of OUTPUT_DIR/<safe stem><suffix>, guaranteed to stay inside it.

  Raises:
    UserError: if the resolved path leaves `output_dir` (e.g. through a
      symbolic link planted there).
  """
  root = os.path.realpath(output_dir)
  name = safe_stem(stem) + re.sub(r'[^A-Za-z0-9._-]', '_', suffix)
  path = os.path.realpath(os.path.join(root, name))
  if os.path.dirname(path) != root:
    raise UserError(f'The output {name} would be written outside {output_dir}.')
  return path
