"""`segmentation_folder`: any folder of images and masks.

Reads a folder given as the manual folder (`--manual_dir=DIR`):

  DIR/images/<stem>.<ext>    PNG, JPEG, TIFF, BMP; 8 or 16 bit; grey, RGB, RGBA
  DIR/masks/<stem>.<ext>     same stems; 0/255, 0/1 or class indices 0..K-1

Images and masks pair by file stem (`images/a.jpg` with `masks/a.png`).

Configs (the image feature's channels and bit depth), picked by name, e.g.
`python -m sharp_unet_jax.data.datasets.build ... segmentation_folder/grey16` or
`tfds.data_source('segmentation_folder/grey16')`:

  rgb8 (default)  uint8 H x W x 3: grey is repeated to RGB, alpha dropped
  grey8           uint8 H x W x 1: colour images are an error
  rgb16, grey16   uint16, for 16-bit sources

Pixels are converted so that value / dtype max stays the same (16-bit to
8-bit: x / 257 rounded; 8-bit to 16-bit: x * 257).

Masks: `mask` uint8 H x W x 1 of class indices, 0 = background. The encoding
is inferred from all masks together: all values in {0, 1} or all in
{0, 255} (or {0, 65535}) is binary (stored as 0/1, 2 classes); otherwise the
values are class indices and the number of classes is the largest value + 1
(at most 255). Masks mixing encodings (e.g. some 0/1, some 0/255) are an
error. The builder option `num_classes=K` skips the inference and checks
every mask against K classes instead (K = 2 accepts 0/1 and 0/255 per file),
e.g. `python -m sharp_unet_jax.data.datasets.build ...
'segmentation_folder/num_classes=3'`. The number of classes, background
included, is stored in `info.metadata['num_classes']` and logged; train with
`--config.num_classes=1` for 2 classes (sigmoid) and K otherwise.

Splits: train / validation / test (70/10/20, by a hash of the stem) and
paper_train / paper_test (seeded 80/20 split like the Sharp U-Net paper, seed
42; paper_test serves as both validation and test set). Licence and
citation: those of your data.

The written data does not record which folder it came from: build each folder
into its own `--data_dir` (configs/folder.py uses DIR itself).
"""

import dataclasses
import pathlib

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from sharp_unet_jax.data.datasets import base, common, layout
from sharp_unet_jax.errors import BadDataError

# Largest number of classes the mask encoding may be inferred as; 255 is
# reserved for binary 0/255 masks.
MAX_CLASSES = 255


@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
  """Channels and bit depth of the `image` feature.

  Attributes:
    channels: 1 (grey) or 3 (RGB).
    bit_depth: 8 (uint8) or 16 (uint16).
  """

  channels: int = 3
  bit_depth: int = 8


CONFIGS = {
  f'{colour}{bits}': FolderConfig(
    name=f'{colour}{bits}',
    description=f'{colour.upper()} images, {bits} bits per channel.',
    channels=3 if colour == 'rgb' else 1,
    bit_depth=bits,
  )
  for bits in (8, 16)
  for colour in ('rgb', 'grey')
}


def infer_num_classes(values_by_file: dict[str, set[int]]) -> tuple[int, str]:
  """Infers the mask encoding from the set of values of each mask file.

  Args:
    values_by_file: the distinct values of each mask, by file name.

  Returns:
    The number of classes including background, and the encoding: '0/1',
    '0/255', '0/65535' or 'class indices'.

  Raises:
    BadDataError: the values fit no single encoding; names files and values.
  """
  found = set().union(*values_by_file.values())
  for encoding in ('0/1', '0/255', '0/65535'):
    if found <= {0, int(encoding[2:])}:
      return 2, encoding
  if min(found) >= 0 and max(found) < MAX_CLASSES:
    return max(found) + 1, 'class indices'
  # List the files with the largest values first: they explain the problem.
  files = sorted(values_by_file, key=lambda f: -max(values_by_file[f]))
  examples = '; '.join(
    f'{f}: {common.format_values(sorted(values_by_file[f]))}' for f in files[:10]
  )
  raise BadDataError(
    f'segmentation_folder: the mask values {common.format_values(sorted(found))} '
    'fit no single encoding (all masks 0/1, all 0/255, or class indices '
    f'0..{MAX_CLASSES - 1}); e.g. {examples}. Fix the masks, or build with '
    "num_classes=K ('segmentation_folder/num_classes=K') to check each mask "
    'against K classes'
  )


class SegmentationFolder(base.SegmentationBuilder):
  """Any DIR/images + DIR/masks folder; see the module docstring."""

  BUILDER_CONFIGS = [CONFIGS['rgb8']]
  LAYOUT = 'images/<stem>.<ext> and masks/<stem>.<ext>'
  SOURCE = 'your own data (a folder holding images/ and masks/)'
  CONFIG_FILE = 'folder.py'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    'Pass the folder that holds images/ and masks/ as --manual_dir.'
  )

  def __init__(self, *, config=None, num_classes: int | None = None, **kwargs):
    """Creates the builder.

    Args:
      config: a config or its name: 'rgb8' (default), 'grey8', 'rgb16' or
        'grey16'.
      num_classes: classes including background; None infers them from the
        masks.
      **kwargs: arguments of `base.SegmentationBuilder`.
    """
    if isinstance(config, str) and config in CONFIGS:
      config = CONFIGS[config]
    if num_classes is not None and not 2 <= int(num_classes) <= MAX_CLASSES:
      raise ValueError(f'num_classes must be in 2..{MAX_CLASSES}, not {num_classes}')
    self._num_classes = None if num_classes is None else int(num_classes)
    self._encoding = None
    super().__init__(config=config, **kwargs)
    self._original_state['num_classes'] = self._num_classes

  @property
  def num_channels(self) -> int:
    """Image channels of this variant: 3 (rgb*) or 1 (grey*)."""
    return self.builder_config.channels

  @property
  def image_dtype(self):
    """Stored pixel dtype of this variant: uint8 or uint16."""
    return np.uint16 if self.builder_config.bit_depth == 16 else np.uint8

  def next_commands(self, manual_dir) -> str:
    """Returns the command that builds the folder on first use and trains."""
    return (
      f'`python main.py --config=configs/folder.py --config.data_dir={manual_dir} '
      '--workdir=DIR` (configs/folder.py builds the folder into itself)'
    )

  def _metadata(self):
    return {}  # Filled in by _find_examples from the masks.

  def _read_mask_values(self, mask_file: common.SourceFile) -> np.ndarray:
    decoded = common.decode_image(mask_file.read_bytes(), mask_file.name)
    return common.mask_values(decoded, mask_file.name)

  def _find_examples(self, manual_dir: pathlib.Path) -> list[base.Example]:
    image_dir = layout.find_dir(manual_dir, ['images'], max_depth=0)
    mask_dir = layout.find_dir(manual_dir, ['masks'], max_depth=0)
    if image_dir is None or mask_dir is None:
      missing = 'images/' if image_dir is None else 'masks/'
      raise self.not_found(manual_dir, f'no folder {missing} found')
    examples = self.paired_examples(manual_dir, image_dir, mask_dir)
    if self._num_classes is not None:
      num_classes = self._num_classes
      encoding = 'binary' if num_classes == 2 else 'class indices'
    else:
      examples = self._read_all_masks(examples)
      num_classes, encoding = infer_num_classes(self._values)
    self._encoding = encoding
    self.info.metadata.update({'num_classes': num_classes, 'mask_encoding': encoding})
    logging.info(
      '%s: masks hold %s: %d classes with background; train with '
      '--config.num_classes=%d',
      self.name,
      encoding,
      num_classes,
      1 if num_classes == 2 else num_classes,
    )
    return examples

  def _read_all_masks(self, examples: list[base.Example]) -> list[base.Example]:
    """Reads every mask's values into self._values; drops or raises for bad ones."""
    self._values, kept, bad = {}, [], []
    for example in examples:
      try:
        values = self._read_mask_values(example.mask)
      except BadDataError as e:
        self.skip_or_raise(e, bad)
        continue
      self._values[example.mask.name] = set(np.unique(values).tolist())
      kept.append(example)
    if bad:
      logging.warning(
        '%s: skip_bad_files=True: left out %d bad mask(s): %s',
        self.name,
        len(bad),
        '; '.join(bad),
      )
    if not kept:
      raise BadDataError(
        f'{self.name}: all {len(examples)} masks are bad, e.g. {bad[0]}'
      )
    return kept

  def _load_example(self, example: base.Example) -> dict:
    value, image = self.read_image(example.image)
    name = example.mask.name
    values = self._read_mask_values(example.mask)
    num_classes = self.info.metadata['num_classes']
    if self._encoding in ('binary', '0/1', '0/255', '0/65535'):
      mask = common.binary_mask(values, name)
    else:
      mask = common.class_mask(values, num_classes, name)
    common.check_same_size(image, mask, example.image.name, name)
    return {'image': value, 'mask': mask}
