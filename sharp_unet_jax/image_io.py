"""Reading images for inference and naming output files safely.

Images are PNG, JPEG or TIFF of any size: grey, grey + alpha, RGB, RGBA or
palette, 8- or 16-bit. They become (H, W, C) uint8 or uint16 arrays with the
model's channels, converted by `input_pipeline.to_channels` as training does;
`input_pipeline.normalize` then scales them to [0, 1] by their dtype's
maximum, also as training does.

Every unreadable file (empty, truncated, corrupt, not an image, or larger
than Pillow's decompression-bomb limit `PIL.Image.MAX_IMAGE_PIXELS`) raises
`BadDataError` naming the file.
"""

import os
import re
import warnings

import numpy as np
from PIL import Image
import tifffile

from sharp_unet_jax import input_pipeline
from sharp_unet_jax.errors import BadDataError, UserError

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.tif', '.tiff')
_TIFF_MAGIC = (b'II*\x00', b'MM\x00*', b'II+\x00', b'MM\x00+')
# Longest output name kept (bytes of the stem), well under file-system limits.
_MAX_STEM = 150


def _check_pixels(height: int, width: int, path: str) -> None:
  limit = Image.MAX_IMAGE_PIXELS
  if limit and height * width > limit:
    raise BadDataError(
      f'{path} is {height}x{width} pixels, over the limit of {limit} against '
      'decompression bombs; raise PIL.Image.MAX_IMAGE_PIXELS if it is genuine.'
    )


def _integer_pixels(array: np.ndarray, path: str) -> np.ndarray:
  """Returns the pixels as uint8 or uint16, scaling bool and [0, 1] floats."""
  if array.dtype in (np.uint8, np.uint16):
    return array
  if array.dtype == np.bool_:
    return array.astype(np.uint8) * np.uint8(255)
  if array.size and np.issubdtype(array.dtype, np.floating):
    low, high = float(np.min(array)), float(np.max(array))
    if 0.0 <= low and high <= 1.0:
      return np.round(array * 65535).astype(np.uint16)
  elif array.size and np.issubdtype(array.dtype, np.integer):
    low, high = int(np.min(array)), int(np.max(array))
    if low >= 0 and high <= 65535:
      return array.astype(
        np.uint8 if high <= 255 and array.itemsize == 1 else np.uint16
      )
  else:
    low = high = None
  raise BadDataError(
    f'{path} has {array.dtype} pixels in [{low}, {high}]; expected 8- or 16-bit '
    'integers or floats in [0, 1].'
  )


def _read_tiff(path: str) -> np.ndarray:
  with tifffile.TiffFile(path) as tif:
    page = tif.pages[0]
    planar = page.axes[:1] == 'S'
    height, width = (page.shape[1], page.shape[2]) if planar else page.shape[:2]
    _check_pixels(height, width, path)
    array = page.asarray()
  return np.moveaxis(array, 0, -1) if planar else array


def _read_pillow(path: str) -> np.ndarray:
  with warnings.catch_warnings():
    # Corrupt files also warn (e.g. 'Corrupt EXIF data'); errors say enough.
    warnings.simplefilter('ignore', UserWarning)
    warnings.simplefilter('error', Image.DecompressionBombWarning)
    with Image.open(path) as img:
      img.load()
      if img.mode in ('P', 'PA'):
        img = img.convert('RGBA' if 'transparency' in img.info else 'RGB')
      elif img.mode in ('CMYK', 'YCbCr', 'LAB', 'HSV'):
        img = img.convert('RGB')
      array = np.asarray(img)
  if array.dtype.kind in 'iu' and array.dtype.itemsize > 1 and img.mode != 'I':
    array = array.astype(np.uint16)  # 'I;16', 'I;16B', ...
  return array


def _decode(path: str) -> np.ndarray:
  with open(path, 'rb') as f:
    head = f.read(4)
  if not head:
    raise BadDataError(f'{path} is empty (0 bytes).')
  if head in _TIFF_MAGIC:
    try:
      return _read_tiff(path)
    except BadDataError:
      raise
    except Exception:  # noqa: BLE001 - Pillow knows some codecs tifffile lacks.
      pass
  return _read_pillow(path)


def read_image(path: str, num_channels: int) -> np.ndarray:
  """Reads an image file as (H, W, num_channels) uint8 or uint16 pixels.

  Args:
    path: a PNG, JPEG or TIFF file (TIFF: the first page).
    num_channels: the model's channels: 1 (grey) or 3 (RGB).

  Returns:
    The pixels, converted like training converts its data.

  Raises:
    BadDataError: naming the file, if it cannot be read as an image.
  """
  try:
    array = _decode(path)
  except BadDataError:
    raise
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise BadDataError(
      f'{path} is too large to decode safely ({e}); raise '
      'PIL.Image.MAX_IMAGE_PIXELS if it is genuine.'
    ) from e
  except Image.UnidentifiedImageError as e:
    raise BadDataError(f'{path} is not an image Pillow or tifffile can read.') from e
  except MemoryError as e:
    raise BadDataError(f'{path} is too large to decode in memory.') from e
  except Exception as e:  # noqa: BLE001 - decoders raise many types on bad files.
    raise BadDataError(f'Cannot read {path} as an image: {e}') from e
  array = _integer_pixels(array, path)
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4) or 0 in array.shape:
    raise BadDataError(
      f'{path} has pixel array shape {array.shape}; expected grey, RGB or RGBA.'
    )
  if array.shape[-1] == 2:  # Grey + alpha: drop alpha.
    array = array[..., :1]
  try:
    array = input_pipeline.to_channels(array[None], num_channels)[0]
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
