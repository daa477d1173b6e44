"""`dsb2018`: cell nuclei in microscopy images (2018 Data Science Bowl, BBBC038).

The 670 annotated training images of the Kaggle 2018 Data Science Bowl stage 1
(image set BBBC038v1 of the Broad Bioimage Benchmark Collection): fluorescence
and brightfield microscopy of many cell types, at various sizes, with one mask
per nucleus.

Source: https://www.kaggle.com/c/data-science-bowl-2018/data (Kaggle login
needed; `stage1_train.zip`), also https://bbbc.broadinstitute.org/BBBC038.
Licence: BBBC038 states the images are CC0 (public domain); please cite
Caicedo et al. 2019.

Expected layout in the manual folder (`--manual_dir`), possibly one or two
folders deep:

  stage1_train/<id>/images/<id>.png     image, RGBA PNG (alpha dropped)
  stage1_train/<id>/masks/<m>.png       one 0/255 mask per nucleus

Features: `image` uint8 H x W x 3; `mask` uint8 H x W x 1, 1 where any
nucleus mask is set (masks merged by max); `instances` uint16 H x W x 1,
0 = background and 1..n the nuclei, numbered in the order of their mask file
names (a pixel in two masks gets the later one's number, with a warning); `id`
the image id. Splits: train / validation / test (70/10/20, by a hash of the
id) and paper_train / paper_test (the paper's 80/20 split, seed 42;
paper_test is both its validation and test set).
"""

import pathlib

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from sharp_unet_jax.data.datasets import base, common, layout
from sharp_unet_jax.errors import BadDataError

_CITATION = r"""@article{caicedo2019nucleus,
  title = {Nucleus segmentation across imaging experiments: the 2018 {Data
    Science Bowl}},
  author = {Caicedo, Juan C. and Goodman, Allen and Karhohs, Kyle W. and
    Cimini, Beth A. and Ackerman, Jeanelle and Haghighi, Marzieh and
    Heng, CherKeng and Becker, Tim and Doan, Minh and McQuin, Claire and
    Rohban, Mohammad and Singh, Shantanu and Carpenter, Anne E.},
  journal = {Nature Methods},
  volume = {16},
  number = {12},
  pages = {1247--1253},
  year = {2019}
}"""


class Dsb2018(base.SegmentationBuilder):
  """DSB 2018 nuclei with binary and instance masks; see the module docstring."""

  LAYOUT = 'stage1_train/<id>/images/<id>.png and stage1_train/<id>/masks/*.png'
  SOURCE = (
    'https://www.kaggle.com/c/data-science-bowl-2018/data (Kaggle login needed; '
    'extract stage1_train.zip into a folder stage1_train)'
  )
  CONFIG_FILE = 'dsb2018.py'
  HOMEPAGE = 'https://bbbc.broadinstitute.org/BBBC038'
  CITATION = _CITATION
  MANUAL_DOWNLOAD_INSTRUCTIONS = base.extract_instructions(
    'stage1_train.zip', SOURCE, LAYOUT
  )

  def _extra_features(self):
    return {
      'instances': tfds.features.Image(
        shape=(None, None, 1),
        dtype=np.uint16,
        encoding_format='png',
        doc='Nucleus number of each pixel, 0 = background.',
      )
    }

  def _find_examples(self, manual_dir: pathlib.Path) -> list[base.Example]:
    root = layout.find_dir(manual_dir, ['stage1_train'])
    if root is None:
      raise self.not_found(manual_dir, 'no folder stage1_train/ found')
    examples, lone_images, lone_masks = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
      image_dir, mask_dir = folder / 'images', folder / 'masks'
      images = layout.list_images(image_dir) if image_dir.is_dir() else {}
      masks = layout.list_images(mask_dir) if mask_dir.is_dir() else {}
      if folder.name in images:
        image = images.pop(folder.name)
      elif len(images) == 1:  # Tolerate a renamed image.
        (image,) = images.values()
        images = {}
      else:
        image = None
      if images:
        raise BadDataError(
          f'{self.name}: {image_dir} holds several images: '
          f'{common.format_values(f.path.name for f in images.values())}; '
          f'expected one, {folder.name}.png'
        )
      if image is None:
        lone_masks.extend(masks[k] for k in sorted(masks))
      elif not masks:
        lone_images.append(image)
      else:
        examples.append(
          base.Example(folder.name, image, [masks[k] for k in sorted(masks)])
        )
    if not examples:
      raise self.not_found(manual_dir, f'no image with masks found in {root}')
    self.report_unpaired(lone_images, lone_masks, 'images/', 'masks/')
    return examples

  def _load_example(self, example: base.Example) -> dict:
    image_file, mask_files = example.image, example.mask
    value, image = self.read_image(image_file)
    if len(mask_files) > np.iinfo(np.uint16).max:
      raise BadDataError(f'{image_file.name} has over 65535 nucleus masks')
    instances = np.zeros(image.shape[:2] + (1,), np.uint16)
    overlapping = []
    for number, mask_file in enumerate(mask_files, start=1):
      decoded = common.decode_image(mask_file.read_bytes(), mask_file.name)
      nucleus = common.binary_mask(
        common.mask_values(decoded, mask_file.name), mask_file.name
      )
      common.check_same_size(image, nucleus, image_file.name, mask_file.name)
      inside = nucleus > 0
      if np.any(instances[inside]):
        overlapping.append(mask_file.path.name)
      instances[inside] = number
    if overlapping:
      logging.warning(
        '%s, %s: masks overlapping earlier ones (pixels renumbered): %s',
        self.name,
        example.id,
        common.format_values(overlapping),
      )
    mask = (instances > 0).astype(np.uint8)
    return {'image': value, 'mask': mask, 'instances': instances}
