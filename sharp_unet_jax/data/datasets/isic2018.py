"""`isic2018`: skin lesions in dermoscopy images (ISIC 2018 Task 1).

The lesion boundary segmentation task of the ISIC 2018 challenge: 2,594
training, 100 validation and 1,000 test dermoscopy images (RGB JPEG, various
sizes up to 6,688 x 4,459) with binary lesion masks.

Source: https://challenge.isic-archive.com/data/#2018, files at
https://isic-challenge-data.s3.amazonaws.com/2018/<name>.zip. Licence:
CC-BY-NC (ISIC 2018 challenge data); cite Codella et al. 2019 and Tschandl et
al. 2018.

Expected in the manual folder (`--manual_dir`), as the official zip files or
extracted folders (possibly one or two folders deep):

  ISIC2018_Task1-2_Training_Input[.zip]/ISIC_<id>.jpg           (required)
  ISIC2018_Task1_Training_GroundTruth[.zip]/ISIC_<id>_segmentation.png (0/255)
  ISIC2018_Task1-2_Validation_Input, ISIC2018_Task1_Validation_GroundTruth,
  ISIC2018_Task1-2_Test_Input, ISIC2018_Task1_Test_GroundTruth   (optional)

With `download=True` (`python -m sharp_unet_jax.data.datasets.build ...
'isic2018/download=True'`) the builder downloads the missing zip files (about
13 GB) with TFDS' download manager.

Features: `image` uint8 H x W x 3 at the source resolution (the JPEG bytes are
stored as they are), `mask` uint8 H x W x 1 of 0/1, `id` = `ISIC_<id>`.
Splits: train / validation / test are the official training, validation and
test sets where present (both input and ground truth); a missing one is
carved out of the training set by a hash of the id (10 % validation, 20 %
test). paper_train / paper_test is the paper's 80/20 split of the 2,594
training images (seed 42; paper_test is both its validation and test set).
"""

import pathlib
import re

from absl import logging

from sharp_unet_jax.data.datasets import base, common, layout, splits
from sharp_unet_jax.errors import BadDataError, DataNotFoundError

_CITATION = r"""@article{codella2019skin,
  title = {Skin Lesion Analysis Toward Melanoma Detection 2018: A Challenge
    Hosted by the International Skin Imaging Collaboration ({ISIC})},
  author = {Codella, Noel and Rotemberg, Veronica and Tschandl, Philipp and
    Celebi, M. Emre and Dusza, Stephen and Gutman, David and Helba, Brian and
    Kalloo, Aadi and Liopyris, Konstantinos and Marchetti, Michael and
    Kittler, Harald and Halpern, Allan},
  journal = {arXiv preprint arXiv:1902.03368},
  year = {2019}
}
@article{tschandl2018ham10000,
  title = {The {HAM10000} dataset, a large collection of multi-source
    dermatoscopic images of common pigmented skin lesions},
  author = {Tschandl, Philipp and Rosendahl, Cliff and Kittler, Harald},
  journal = {Scientific Data},
  volume = {5},
  pages = {180161},
  year = {2018}
}"""

URL = 'https://isic-challenge-data.s3.amazonaws.com/2018/'
# (input, ground truth) file names of each official set.
PARTS = {
  'train': ('ISIC2018_Task1-2_Training_Input', 'ISIC2018_Task1_Training_GroundTruth'),
  'validation': (
    'ISIC2018_Task1-2_Validation_Input',
    'ISIC2018_Task1_Validation_GroundTruth',
  ),
  'test': ('ISIC2018_Task1-2_Test_Input', 'ISIC2018_Task1_Test_GroundTruth'),
}
_IMAGE = re.compile(r'(?:^|/)(ISIC_\d+)\.jpe?g$', re.IGNORECASE)
_MASK = re.compile(r'(?:^|/)(ISIC_\d+)_segmentation\.png$', re.IGNORECASE)


def _entries(location: pathlib.Path) -> list[tuple[str, common.SourceFile]]:
  """Returns (relative name, file) of every file in a folder or zip archive."""
  if location.is_dir():
    return [
      (p.relative_to(location).as_posix(), common.SourceFile(p))
      for p in sorted(location.rglob('*'))
      if p.is_file()
    ]
  archive = common.open_zip(location)
  return [
    (name, common.SourceFile(location, name))
    for name in sorted(archive.namelist())
    if not name.endswith('/')
  ]


def list_part(location: pathlib.Path, pattern: re.Pattern) -> dict:
  """Returns the files of an ISIC folder or zip matching `pattern`, by id.

  Non-image files (LICENSE.txt, ...) and macOS metadata are ignored; images
  with unexpected names are ignored with a warning.

  Raises:
    BadDataError: two files have the same id.
  """
  files, unexpected = {}, []
  for name, source in _entries(location):
    base_name = name.rsplit('/', 1)[-1]
    if name.startswith('__MACOSX/') or base_name.startswith('.'):
      continue
    match = pattern.search(name)
    if match is None:
      if pathlib.PurePosixPath(name).suffix.lower() in layout.IMAGE_SUFFIXES:
        unexpected.append(name)
      continue
    if match.group(1) in files:
      raise BadDataError(
        f'{location} holds two files for {match.group(1)}: '
        f'{files[match.group(1)].name} and {source.name}'
      )
    files[match.group(1)] = source
  if unexpected:
    logging.warning(
      'isic2018: ignoring %d image(s) in %s without an ISIC name: %s',
      len(unexpected),
      location,
      common.format_values(unexpected),
    )
  return files


class Isic2018(base.SegmentationBuilder):
  """ISIC 2018 Task 1 dermoscopy images with lesion masks; see the docstring."""

  LAYOUT = (
    f'{PARTS["train"][0]}.zip and {PARTS["train"][1]}.zip (or the extracted '
    'folders), optionally the Validation and Test ones'
  )
  SOURCE = (
    'https://challenge.isic-archive.com/data/#2018 (or let the builder '
    'download them: `python -m sharp_unet_jax.data.datasets.build ... '
    "'isic2018/download=True'`)"
  )
  CONFIG_FILE = 'isic.py'
  HOMEPAGE = 'https://challenge.isic-archive.com/data/#2018'
  CITATION = _CITATION
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f'Download the Task 1 zip files from {HOMEPAGE} (e.g. '
    f'{URL}{PARTS["train"][0]}.zip) into the manual folder: {LAYOUT}.'
  )

  def __init__(self, *, download: bool = False, **kwargs):
    """Creates the builder.

    Args:
      download: download the zip files missing from the manual folder.
      **kwargs: arguments of `base.SegmentationBuilder`.
    """
    self._download = bool(download)
    super().__init__(**kwargs)
    self._original_state['download'] = self._download

  def _locate(self, manual_dir: pathlib.Path | None, part: str):
    """Returns the folder or zip file of `part`, or None."""
    if manual_dir is None:
      return None
    folder = layout.find_dir(manual_dir, [part])
    return folder or layout.find_file(manual_dir, [part + '.zip'])

  def _examples(self, image_location, mask_location) -> list[base.Example]:
    pairs, lone_images, lone_masks = layout.pair_by_stem(
      list_part(image_location, _IMAGE), list_part(mask_location, _MASK)
    )
    self.report_unpaired(lone_images, lone_masks, image_location, mask_location)
    return [base.Example(i, image, mask) for i, image, mask in pairs]

  def _make_splits(self, dl_manager) -> dict[str, list[base.Example]]:
    try:
      manual_dir = self._manual_path(dl_manager)
    except DataNotFoundError:
      if not self._download:
        raise
      manual_dir = None
    locations = {
      part: self._locate(manual_dir, part) for pair in PARTS.values() for part in pair
    }
    missing = [part for part, location in locations.items() if location is None]
    if missing and self._download:
      downloaded = dl_manager.download({p: f'{URL}{p}.zip' for p in missing})
      locations.update({p: pathlib.Path(path) for p, path in downloaded.items()})
    where = manual_dir or getattr(dl_manager, '_manual_dir', '<manual_dir>')
    train_parts = [locations[p] for p in PARTS['train']]
    if None in train_parts:
      absent = [p for p in PARTS['train'] if locations[p] is None]
      raise self.not_found(where, f'no {" or ".join(absent)} (.zip or folder) found')
    official = {'train': self._examples(*train_parts)}
    if not official['train']:
      raise self.not_found(where, 'no training image has a mask')
    for split in ('validation', 'test'):
      image_location, mask_location = (locations[p] for p in PARTS[split])
      if image_location and mask_location:
        official[split] = self._examples(image_location, mask_location)
      elif image_location or mask_location:
        absent = PARTS[split][0] if image_location is None else PARTS[split][1]
        logging.warning(
          'isic2018: %s missing, so the official %s set is not used; %s is '
          'carved out of the training set instead',
          absent,
          split,
          split,
        )
    return self._assign(official)

  def _assign(self, official: dict[str, list[base.Example]]) -> dict:
    """Returns the splits: official sets where present, else carved out."""
    train = {e.id: e for e in official['train']}
    carved = splits.standard_split(train, dataset=self.name)
    result = {'train': carved['train']}
    for split in ('validation', 'test'):
      if split in official:
        result['train'] += carved[split]  # Keep the carve-out for training.
      else:
        official[split] = [train[i] for i in carved[split]]
    result = {name: [train[i] for i in sorted(ids)] for name, ids in result.items()}
    result['validation'] = official['validation']
    result['test'] = official['test']
    paper = splits.paper_split(train, seed=self.PAPER_SEED, dataset=self.name)
    for name, ids in paper.items():
      result[name] = [train[i] for i in ids]
    return result

  def _load_example(self, example: base.Example) -> dict:
    return self.read_binary_pair(example.image, example.mask)
