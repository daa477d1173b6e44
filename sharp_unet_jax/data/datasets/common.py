"""Reading source files of the data set builders: files, images and masks.

Every problem a user can fix raises `BadDataError` naming the file: an empty
or unreadable file, an image too large to decode safely, pixels of an
unsupported type, a mask whose size differs from its image or whose values fit
no encoding. Builders decide whether to stop or to skip the example.
"""

import dataclasses
import functools
import io
import pathlib
import warnings
import zipfile

import numpy as np
from PIL import Image
import tifffile

from sharp_unet_jax.errors import BadDataError

# How many values or file names a message lists before it says '...'.
# The record format every builder writes: random access by example index
# (`tfds.data_source`), which the input pipeline reads.
FILE_FORMAT = 'array_record'
_MAX_LISTED = 10


@dataclasses.dataclass(frozen=True)
class SourceFile:
  """A file on disk or a member of a zip archive.

  Attributes:
    path: the file on disk, or the zip archive that holds `member`.
    member: name of the file inside the archive; None for a plain file.
  """

  path: pathlib.Path
  member: str | None = None

  @property
  def name(self) -> str:
    """The name used in messages: the path, or `archive.zip:member`."""
    return f'{self.path}:{self.member}' if self.member else str(self.path)

  @property
  def stem(self) -> str:
    """The file name without folder and extension."""
    if self.member is None:
      return self.path.stem
    return pathlib.PurePosixPath(self.member).stem

  def read_bytes(self) -> bytes:
    """Returns the file's content.

    Raises:
      BadDataError: the file is unreadable or empty.
    """
    try:
      if self.member is None:
        data = self.path.read_bytes()
      else:
        data = open_zip(self.path).read(self.member)
    except (OSError, KeyError, zipfile.BadZipFile, EOFError) as e:
      raise BadDataError(f'cannot read {self.name}: {e}') from e
    if not data:
      raise BadDataError(f'{self.name} is empty (0 bytes)')
    return data


@functools.lru_cache(maxsize=16)
def open_zip(path: pathlib.Path) -> zipfile.ZipFile:
  """Opens a zip archive once and keeps it open for later reads.

  Raises:
    BadDataError: the archive is empty, truncated or not a zip file.
  """
  try:
    return zipfile.ZipFile(path)
  except (OSError, zipfile.BadZipFile) as e:
    raise BadDataError(
      f'cannot open the zip archive {path}: {e}; download it again'
    ) from e


def format_values(values) -> str:
  """Returns up to ten values (or names) as a comma-separated string."""
  values = list(values)
  text = ', '.join(str(v) for v in values[:_MAX_LISTED])
  if len(values) > _MAX_LISTED:
    text += f', ... ({len(values)} in all)'
  return text


# --- Decoding ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DecodedImage:
  """Pixels of a decoded file, in the file's own type and layout.

  Attributes:
    array: H x W or H x W x C pixels (bool, uint8, uint16, int32 or float32).
    format: the file format as Pillow names it ('PNG', 'JPEG', 'TIFF', ...).
    mode: Pillow's pixel mode ('L', 'RGB', 'P', ...); None when tifffile
      decoded the file.
    palette: for palette ('P') images, the RGB colour of each index, N x 3
      uint8; `array` then holds the indices. None otherwise.
  """

  array: np.ndarray
  format: str
  mode: str | None = None
  palette: np.ndarray | None = None


def _is_tiff(data: bytes) -> bool:
  return data[:4] in (b'II*\x00', b'MM\x00*', b'II+\x00', b'MM\x00+')


def check_pixel_count(height: int, width: int, name: str) -> None:
  """Applies Pillow's decompression-bomb limit to files Pillow doesn't read.

  Raises:
    BadDataError: the image has more than `PIL.Image.MAX_IMAGE_PIXELS` pixels.
  """
  limit = Image.MAX_IMAGE_PIXELS
  if limit and height * width > limit:
    raise BadDataError(
      f'{name} is {height}x{width} pixels, over the limit of {limit} against '
      'decompression bombs; if the file is genuine, raise '
      'PIL.Image.MAX_IMAGE_PIXELS before building'
    )


def _tiff_page_array(page, name: str) -> np.ndarray:
  """Returns one TIFF page as H x W or H x W x C."""
  shape = page.shape
  height, width = (shape[1], shape[2]) if page.axes[:1] == 'S' else shape[:2]
  check_pixel_count(height, width, name)
  array = page.asarray()
  if page.axes[:1] == 'S':  # Planar channels first: move them last.
    array = np.moveaxis(array, 0, -1)
  return array


def _decode_tiff(data: bytes, name: str) -> DecodedImage | None:
  """Decodes the first page of a TIFF; None when tifffile can't decompress it."""
  try:
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
      return DecodedImage(_tiff_page_array(tif.pages[0], name), 'TIFF')
  except BadDataError:
    raise
  except Exception:  # pylint: disable=broad-except
    # tifffile lacks some codecs (e.g. LZW, JPEG without imagecodecs): let
    # Pillow try, and report Pillow's error if it fails too.
    return None


def _pil_array(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
  """Returns the pixels of an opened Pillow image and its palette, if any."""
  if img.mode in ('P', 'PA'):
    palette = np.asarray(img.getpalette('RGB'), np.uint8).reshape(-1, 3)
    indices = np.asarray(img.getchannel(0) if img.mode == 'PA' else img)
    return indices, palette
  if img.mode in ('1', 'L', 'LA', 'RGB', 'RGBA', 'I', 'F'):
    return np.asarray(img), None
  if img.mode.startswith('I;16'):
    return np.asarray(img).astype(np.uint16), None
  # CMYK, YCbCr, LAB, HSV: convert to RGB.
  return np.asarray(img.convert('RGB')), None


def decode_image(data: bytes, name: str) -> DecodedImage:
  """Decodes an image file (PNG, JPEG, TIFF, BMP, GIF: first frame).

  Args:
    data: the file's content.
    name: the file's name, for messages.

  Returns:
    The decoded pixels.

  Raises:
    BadDataError: the data is not a decodable image, or it is larger than
      Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`).
  """
  if _is_tiff(data):
    decoded = _decode_tiff(data, name)
    if decoded is not None:
      return decoded
  try:
    with warnings.catch_warnings():
      # Corrupt files also warn (e.g. 'Corrupt EXIF data'); the error says it.
      warnings.simplefilter('ignore', UserWarning)
      warnings.simplefilter('error', Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(data)) as img:
        img.load()
        array, palette = _pil_array(img)
        return DecodedImage(array, img.format or '', img.mode, palette)
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise BadDataError(
      f'{name} is too large to decode safely ({e}); if the file is genuine, '
      'raise PIL.Image.MAX_IMAGE_PIXELS before building'
    ) from e
  except Image.UnidentifiedImageError as e:
    raise BadDataError(f'cannot decode {name}: not an image format Pillow knows') from e
  except Exception as e:  # pylint: disable=broad-except
    # Pillow raises OSError, ValueError, SyntaxError, EOFError, struct.error,
    # ... for corrupt files.
    raise BadDataError(f'cannot decode {name} as an image: {e}') from e


def decode_tiff_pages(data: bytes, name: str) -> np.ndarray:
  """Decodes all pages of a multi-page TIFF into one N x H x W (x C) array.

  Raises:
    BadDataError: the file is no decodable TIFF or its pages differ in shape.
  """
  try:
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
      pages = [_tiff_page_array(page, name) for page in tif.pages]
  except BadDataError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise BadDataError(f'cannot decode {name} as a multi-page TIFF: {e}') from e
  shapes = sorted({page.shape for page in pages})
  if len(shapes) > 1:
    raise BadDataError(f'the pages of {name} differ in shape: {format_values(shapes)}')
  return np.stack(pages)


# --- Images ----------------------------------------------------------------------


def _to_dtype(array: np.ndarray, dtype: type[np.integer], name: str) -> np.ndarray:
  """Converts pixels to uint8 or uint16, keeping [0, max] mapped to [0, max]."""
  dtype = np.dtype(dtype)
  top = np.iinfo(dtype).max
  if array.dtype == dtype:
    return array
  if array.dtype == np.bool_:
    return array.astype(dtype) * top
  if array.dtype == np.uint8:  # to uint16
    return array.astype(np.uint16) * 257
  if array.dtype == np.uint16:  # to uint8, rounded
    return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
  if array.size == 0:
    raise BadDataError(f'{name} has no pixels')
  low, high = array.min(), array.max()
  if np.issubdtype(array.dtype, np.floating):
    if np.isfinite(low) and np.isfinite(high) and 0 <= low and high <= 1:
      return np.round(array * top).astype(dtype)
    raise BadDataError(
      f'{name} has floating-point pixels in [{low}, {high}]; expected 8- or '
      '16-bit integers or floats in [0, 1]'
    )
  if np.issubdtype(array.dtype, np.integer) and low >= 0 and high <= 65535:
    return _to_dtype(array.astype(np.uint16), dtype, name)
  raise BadDataError(
    f'{name} has {array.dtype} pixels in [{low}, {high}]; expected 8- or '
    '16-bit unsigned integers'
  )


def to_image(
  decoded: DecodedImage, channels: int, dtype: type[np.integer], name: str
) -> np.ndarray:
  """Returns the pixels as H x W x `channels` of `dtype` (uint8 or uint16).

  Alpha is dropped, grey is repeated to RGB when `channels` is 3, and 16-bit
  pixels become 8-bit (x / 257, rounded) for uint8 and vice versa (x * 257),
  so the pixel value divided by the dtype's maximum is unchanged.

  Args:
    decoded: the decoded file.
    channels: 1 (grey), 3 (RGB), or 0 to keep the file's own channels.
    dtype: np.uint8 or np.uint16.
    name: the file's name, for messages.

  Raises:
    BadDataError: pixels of an unsupported type, an unexpected number of
      channels, or a colour image where grey is expected.
  """
  array = decoded.array
  if decoded.palette is not None:
    array = decoded.palette[np.clip(array, 0, len(decoded.palette) - 1)]
  array = _to_dtype(array, dtype, name)
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
    raise BadDataError(
      f'{name} has pixel array shape {array.shape}; expected grey, RGB or RGBA'
    )
  if array.shape[-1] in (2, 4):  # Drop alpha.
    array = array[..., :-1]
  if channels == 3 and array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  elif channels == 1 and array.shape[-1] == 3:
    if not (
      np.all(array[..., 0] == array[..., 1]) and np.all(array[..., 0] == array[..., 2])
    ):
      raise BadDataError(f'{name} is a colour image; expected greyscale')
    array = array[..., :1]
  return np.ascontiguousarray(array)


# --- Masks -----------------------------------------------------------------------


def mask_values(decoded: DecodedImage, name: str) -> np.ndarray:
  """Returns the H x W integer value of each mask pixel.

  Palette images give their indices; RGB(A) masks must be grey (equal
  channels); alpha is dropped.

  Raises:
    BadDataError: non-integer values, or channels that differ (a colour mask).
  """
  array = decoded.array
  if array.dtype == np.bool_:
    array = array.astype(np.uint8)
  if np.issubdtype(array.dtype, np.floating):
    if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
      raise BadDataError(f'{name} is a mask with non-integer values')
    array = array.astype(np.int64)
  if array.ndim == 3:
    if array.shape[-1] in (2, 4):
      array = array[..., :-1]
    if np.any(array != array[..., :1]):
      raise BadDataError(
        f'{name} is a colour mask (its channels differ); expected one value per pixel'
      )
    array = array[..., 0]
  if array.ndim != 2:
    raise BadDataError(f'{name} has mask shape {array.shape}; expected H x W')
  return array


def binary_mask(values: np.ndarray, name: str) -> np.ndarray:
  """Returns a 0/1 uint8 H x W x 1 mask from 0/1, 0/255 or 0/65535 values.

  Raises:
    BadDataError: the values fit none of these encodings.
  """
  found = set(np.unique(values).tolist())
  for encoding in ({0, 1}, {0, 255}, {0, 65535}):
    if found <= encoding:
      return (values > 0).astype(np.uint8)[..., None]
  raise BadDataError(
    f'{name} has mask values {format_values(sorted(found))}, which fit no binary '
    'encoding (0/255 or 0/1)'
  )


def class_mask(values: np.ndarray, num_classes: int, name: str) -> np.ndarray:
  """Returns a uint8 H x W x 1 mask of class indices 0..num_classes-1.

  Raises:
    BadDataError: a value is negative or not below `num_classes`.
  """
  found = np.unique(values)
  bad = found[(found < 0) | (found >= num_classes)]
  if bad.size:
    raise BadDataError(
      f'{name} has mask values {format_values(bad.tolist())} that are no class '
      f'index 0..{num_classes - 1} (values found: '
      f'{format_values(found.tolist())})'
    )
  return values.astype(np.uint8)[..., None]


def check_same_size(
  image: np.ndarray, mask: np.ndarray, image_name: str, mask_name: str
) -> None:
  """Checks that an image and its mask have the same height and width.

  Raises:
    BadDataError: naming the mask and both sizes.
  """
  if image.shape[:2] != mask.shape[:2]:
    raise BadDataError(
      f'{mask_name} is {mask.shape[0]}x{mask.shape[1]} pixels but its image '
      f'{image_name} is {image.shape[0]}x{image.shape[1]}'
    )
