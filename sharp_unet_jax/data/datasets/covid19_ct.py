"""`covid19_ct`: COVID-19 lesions in CT slices (MedSeg COVID-19 CT segmentation).

100 axial CT slices (512x512) from more than 40 COVID-19 patients, segmented
by a radiologist into background (0), ground-glass opacity (1), consolidation
(2) and pleural effusion (3).

Source: http://medicalsegmentation.com/covid19/ (MedSeg). Licence: not
stated by the Sharp U-Net reference code; see the source page.

Expected files in the manual folder (`--manual_dir`), possibly one or two
folders deep:

  tr_im.nii.gz     NIfTI volume 512 x 512 x 100 of Hounsfield units (HU)
  tr_mask.nii.gz   NIfTI volume 512 x 512 x 100 of class indices 0..3

(`.nii` accepted too.) Slice i is `volume[:, :, i]` rotated 90 degrees
clockwise to stand upright, as the reference code does. Image values: HU
clipped to [-512, 512] and mapped linearly to uint16 0..65535
(round((HU + 512) / 1024 * 65535)), so the input pipeline's division by the
dtype's maximum gives the paper's normalisation (HU + 512) / 1024 in [0, 1].

Features: `image` uint16 H x W x 1, `mask` uint8 H x W x 1 of class indices
0..3, `id` = `slice_NNN`. Splits: train / validation / test (70/10/20, by a
hash of the id) and paper_train / paper_test (the paper's 80/20 split, seed 0
as in the reference code; paper_test is both its validation and test set). A
volume that cannot be read stops the build even with skip_bad_files=True.
"""

import pathlib

import nibabel as nib
import numpy as np

from sharp_unet_jax.data.datasets import base, common, layout
from sharp_unet_jax.errors import BadDataError

_CITATION = r"""@misc{medseg2020covid,
  author = {{MedSeg}},
  title = {{COVID-19} {CT} segmentation dataset},
  howpublished = {\url{http://medicalsegmentation.com/covid19/}},
  year = {2020}
}"""

# The HU window of the reference code.
HU_MIN, HU_MAX = -512.0, 512.0
_IMAGES = 'tr_im.nii.gz'
_MASKS = 'tr_mask.nii.gz'


def hu_to_uint16(hu: np.ndarray) -> np.ndarray:
  """Maps HU clipped to [HU_MIN, HU_MAX] linearly to uint16 0..65535."""
  scaled = (np.clip(hu, HU_MIN, HU_MAX) - HU_MIN) / (HU_MAX - HU_MIN)
  return np.round(scaled * 65535.0).astype(np.uint16)


def upright(slice_: np.ndarray) -> np.ndarray:
  """Rotates a NIfTI slice 90 degrees clockwise (cv2.ROTATE_90_CLOCKWISE)."""
  return np.rot90(slice_, k=-1)


def _load_volume(path: pathlib.Path, dtype) -> np.ndarray:
  """Returns a NIfTI volume as X x Y x Z."""
  if path.stat().st_size == 0:
    raise BadDataError(f'{path} is empty (0 bytes); download it again')
  try:
    volume = np.asarray(nib.load(path).get_fdata(dtype=dtype))
  except Exception as e:  # pylint: disable=broad-except
    # nibabel raises ImageFileError, EOFError, OSError, zlib.error, ...
    raise BadDataError(f'cannot read {path} as a NIfTI volume: {e}') from e
  if volume.ndim == 4 and volume.shape[-1] == 1:
    volume = volume[..., 0]
  if volume.ndim != 3:
    raise BadDataError(f'{path} has shape {volume.shape}; expected X x Y x slices')
  return volume


class Covid19Ct(base.SegmentationBuilder):
  """MedSeg COVID-19 CT slices with 4-class masks; see the module docstring."""

  NUM_CHANNELS = 1
  IMAGE_DTYPE = np.uint16
  NUM_CLASSES = 4
  PAPER_SEED = 0
  LAYOUT = f'{_IMAGES} and {_MASKS} (NIfTI volumes)'
  SOURCE = 'http://medicalsegmentation.com/covid19/'
  CONFIG_FILE = 'covid19_ct.py'
  HOMEPAGE = SOURCE
  CITATION = _CITATION
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f'Download {_IMAGES} and {_MASKS} from {SOURCE} into the manual folder.'
  )

  def _metadata(self):
    return {
      'num_classes': 4,
      'class_names': ['background', 'ground_glass', 'consolidation', 'effusion'],
      'hu_window': [HU_MIN, HU_MAX],
    }

  def _find_examples(self, manual_dir: pathlib.Path) -> list[base.Example]:
    paths = []
    for name in (_IMAGES, _MASKS):
      path = layout.find_file(manual_dir, [name, name.removesuffix('.gz')])
      if path is None:
        raise self.not_found(manual_dir, f'no file {name} found')
      paths.append(path)
    images, masks = (
      _load_volume(paths[0], np.float32),
      _load_volume(paths[1], np.float32),
    )
    if images.shape != masks.shape:
      raise BadDataError(
        f'{self.name}: {paths[1]} has shape {masks.shape} but {paths[0]} has '
        f'shape {images.shape}'
      )
    self._volumes = {'image': images, 'mask': masks, 'paths': paths}
    return [base.Example(f'slice_{i:03d}', i, i) for i in range(images.shape[-1])]

  def _load_example(self, example: base.Example) -> dict:
    image_path, mask_path = self._volumes['paths']
    hu = upright(self._volumes['image'][:, :, example.image])
    if not np.all(np.isfinite(hu)):
      raise BadDataError(
        f'{image_path} slice {example.image} has NaN or infinite values'
      )
    image = hu_to_uint16(hu)
    mask_name = f'{mask_path} slice {example.mask}'
    values = common.mask_values(
      common.DecodedImage(upright(self._volumes['mask'][:, :, example.mask]), 'NIfTI'),
      mask_name,
    )
    mask = common.class_mask(values, self.NUM_CLASSES, mask_name)
    return {'image': np.ascontiguousarray(image[..., None]), 'mask': mask}
