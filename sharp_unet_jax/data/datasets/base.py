"""The base class of the project's segmentation builders.

A builder finds its examples in the manual folder (`_find_examples`), and
turns one example into features (`_load_example`). The base class provides
the features, the splits, the messages for missing data and the handling of
bad files:

* Missing data raises `DataNotFoundError` naming the expected files, where to
  get them and the commands to run next.
* A bad file (empty, undecodable, wrong size, unexpected mask values) raises
  `BadDataError` naming it. Built with `skip_bad_files=True` the builder
  leaves such examples out instead, as well as images without a mask and
  masks without an image, and logs a warning with their count and names:

    python -m sharp_unet_jax.data.datasets.build --manual_dir=DIR \
        'NAME/skip_bad_files=True'
    tfds.builder('NAME', skip_bad_files=True)  # Python

  (`tfds build --imports sharp_unet_jax.data.datasets` takes the same arguments.)

  The option only changes which examples are written; the data set's name and
  folder stay the same, so train with `--config.dataset=NAME` as usual.
"""

import abc
import dataclasses
import pathlib
import sys
from typing import Any, Iterator

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from sharp_unet_jax.data.datasets import common, layout, splits
from sharp_unet_jax.errors import BadDataError, DataNotFoundError


def extract_instructions(download: str, source: str, files: str) -> str:
  """MANUAL_DOWNLOAD_INSTRUCTIONS of a data set that comes as an archive.

  Args:
    download: what to download, e.g. 'stage1_train.zip'.
    source: where from.
    files: what the manual folder holds once it is extracted.
  """
  return (
    f'Download {download} from {source} and extract it into the manual folder '
    f'so that it holds {files}.'
  )


@dataclasses.dataclass(frozen=True)
class Example:
  """One example to generate.

  Attributes:
    id: unique id, the file stem in most data sets; the TFDS key and `id`.
    image: what `_load_example` reads the image from (a SourceFile, an index).
    mask: what `_load_example` reads the mask from.
  """

  id: str
  image: Any
  mask: Any


class SegmentationBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Image + mask builder reading a manual folder; see the module docstring."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # Channels (1 or 3) and dtype (np.uint8 or np.uint16) of `image`.
  NUM_CHANNELS = 3
  IMAGE_DTYPE = np.uint8
  # Classes including background (2 = binary).
  NUM_CLASSES = 2
  # random_state of the paper's train_test_split.
  PAPER_SEED = 42
  # The expected files, where to get them, the training config file; all for
  # messages.
  LAYOUT = ''
  SOURCE = ''
  CONFIG_FILE = ''
  HOMEPAGE = ''
  CITATION = ''

  def __init__(self, *, skip_bad_files: bool = False, **kwargs):
    """Creates the builder.

    Args:
      skip_bad_files: leave out bad files and unpaired images or masks (with a
        warning naming them) instead of raising `BadDataError`.
      **kwargs: arguments of `tfds.core.GeneratorBasedBuilder`.
    """
    self._skip_bad_files = bool(skip_bad_files)
    kwargs.setdefault('file_format', common.FILE_FORMAT)
    super().__init__(**kwargs)
    # TFDS re-creates builders from this state (pickling).
    self._original_state['skip_bad_files'] = self._skip_bad_files

  # --- Subclass hooks ----------------------------------------------------------

  def _find_examples(self, manual_dir: pathlib.Path) -> list[Example]:
    """Returns the examples found in `manual_dir`; raises if there are none.

    Builders override this, or `_make_splits` for splits of their own.
    """
    raise NotImplementedError

  @abc.abstractmethod
  def _load_example(self, example: Example) -> dict[str, Any]:
    """Returns the features of `example` but `id`; raises BadDataError."""

  def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
    """Features besides id, image and mask."""
    return {}

  def _metadata(self) -> dict[str, Any]:
    """Metadata stored with the data set (`info.metadata`)."""
    return {'num_classes': self.NUM_CLASSES}

  # --- Info ------------------------------------------------------------------------

  @property
  def num_channels(self) -> int:
    """Channels of the `image` feature."""
    return self.NUM_CHANNELS

  @property
  def image_dtype(self) -> type[np.integer]:
    """Dtype of the `image` feature."""
    return self.IMAGE_DTYPE

  def _info(self) -> tfds.core.DatasetInfo:
    module = sys.modules[type(self).__module__]
    features = {
      'id': tfds.features.Text(doc='Source file stem (or slice / page id).'),
      'image': tfds.features.Image(
        shape=(None, None, self.num_channels), dtype=self.image_dtype
      ),
      'mask': tfds.features.Image(
        shape=(None, None, 1),
        dtype=np.uint8,
        encoding_format='png',
        doc='Class index of each pixel, 0 = background.',
      ),
    }
    features.update(self._extra_features())
    return tfds.core.DatasetInfo(
      builder=self,
      description=(module.__doc__ or '').strip(),
      features=tfds.features.FeaturesDict(features),
      supervised_keys=('image', 'mask'),
      homepage=self.HOMEPAGE,
      citation=self.CITATION,
      metadata=tfds.core.MetadataDict(self._metadata()),
    )

  # --- Messages --------------------------------------------------------------------

  def next_commands(self, manual_dir) -> str:
    """Returns the commands that build this data set and train on it."""
    data_dir = self._data_dir_root
    return (
      f'`python -m sharp_unet_jax.data.datasets.build --manual_dir={manual_dir} '
      f'--data_dir={data_dir} {self.name}` (or `tfds build --imports '
      'sharp_unet_jax.data.datasets` with the same flags) then `python main.py '
      f'--config=configs/{self.CONFIG_FILE} --config.data_dir={data_dir} '
      '--workdir=DIR`'
    )

  def not_found(self, manual_dir, problem: str) -> DataNotFoundError:
    """Returns the error for missing data: what, where to get it, what next."""
    return DataNotFoundError(
      f'{self.name}: {problem}. Expected in {manual_dir}: {self.LAYOUT}. Get '
      f'the data from {self.SOURCE}, put it there, then run '
      f'{self.next_commands(manual_dir)}'
    )

  @property
  def skip_hint(self) -> str:
    """The end of a bad-data message: how to skip such files."""
    return (
      'or build with skip_bad_files=True to leave such files out (`python -m '
      f"sharp_unet_jax.data.datasets.build ... '{self.name}/skip_bad_files=True'`)"
    )

  def skip_or_raise(self, error: BadDataError, skipped: list[str]) -> None:
    """Records a bad file in `skipped` when skipping them, else stops the build.

    Raises:
      BadDataError: naming the file and how to skip it, unless skipping.
    """
    if not self._skip_bad_files:
      raise BadDataError(
        f'{self.name}: {error}; fix or remove it, {self.skip_hint}'
      ) from error
    skipped.append(str(error))

  def report_unpaired(self, lone_images, lone_masks, image_where, mask_where):
    """Raises for (or, skipping, warns of) images without masks and vice versa.

    Args:
      lone_images: SourceFiles of images without a mask.
      lone_masks: SourceFiles of masks without an image.
      image_where: where the images were looked for, for the message.
      mask_where: where the masks were looked for.

    Raises:
      BadDataError: some are unpaired, unless skipping bad files.
    """
    problems = []
    if lone_images:
      problems.append(
        f'{len(lone_images)} image(s) without a mask in {mask_where}: '
        f'{common.format_values(f.name for f in lone_images)}'
      )
    if lone_masks:
      problems.append(
        f'{len(lone_masks)} mask(s) without an image in {image_where}: '
        f'{common.format_values(f.name for f in lone_masks)}'
      )
    if not problems:
      return
    message = f'{self.name}: ' + '; '.join(problems)
    if not self._skip_bad_files:
      raise BadDataError(f'{message}. Add the missing files, {self.skip_hint}')
    names = [f.name for f in list(lone_images) + list(lone_masks)]
    logging.warning(
      '%s: skip_bad_files=True: leaving out %d unpaired file(s): %s',
      self.name,
      len(names),
      ', '.join(names),
    )

  # --- Generation ------------------------------------------------------------------

  def _manual_path(self, dl_manager) -> pathlib.Path:
    """Returns the manual folder; raises DataNotFoundError if empty or absent."""
    manual_dir = getattr(dl_manager, '_manual_dir', None) or '<manual_dir>'
    try:
      return pathlib.Path(dl_manager.manual_dir)
    except AssertionError as e:  # TFDS: missing or empty.
      raise self.not_found(
        manual_dir, f'the manual folder {manual_dir} is missing or empty'
      ) from e

  def _make_splits(self, dl_manager) -> dict[str, list[Example]]:
    """Returns the examples of each split."""
    examples = self._find_examples(self._manual_path(dl_manager))
    return self.default_splits(examples)

  def default_splits(
    self, examples: list[Example], ordered: bool = False
  ) -> dict[str, list[Example]]:
    """Returns the standard (hashed or `ordered`) and the paper splits."""
    by_id = {e.id: e for e in examples}
    split_fn = splits.ordered_split if ordered else splits.standard_split
    ids = split_fn(by_id, dataset=self.name)
    ids.update(splits.paper_split(by_id, seed=self.PAPER_SEED, dataset=self.name))
    return {name: [by_id[i] for i in split_ids] for name, split_ids in ids.items()}

  def _split_generators(self, dl_manager):
    return {
      name: self._generate_examples(examples, name)
      for name, examples in self._make_splits(dl_manager).items()
    }

  def _generate_examples(
    self, examples: list[Example], split: str
  ) -> Iterator[tuple[str, dict[str, Any]]]:
    skipped = []
    for example in examples:
      try:
        features = self._load_example(example)
      except BadDataError as e:
        self.skip_or_raise(e, skipped)
        continue
      yield example.id, {'id': example.id, **features}
    if skipped:
      logging.warning(
        '%s, split %s: skip_bad_files=True: left out %d bad example(s): %s',
        self.name,
        split,
        len(skipped),
        '; '.join(skipped),
      )
    if examples and len(skipped) == len(examples):
      raise BadDataError(
        f'{self.name}: all {len(examples)} examples of split {split} are bad, '
        f'e.g. {skipped[0]}'
      )

  # --- Shared loaders --------------------------------------------------------------

  def read_image(self, source: common.SourceFile) -> tuple[Any, np.ndarray]:
    """Reads an image file as this builder's `image` feature.

    Returns:
      The feature value: the file's own bytes for a JPEG that needs no
      conversion (no re-encoding, no loss), else the pixel array; and the
      pixel array (H x W x C).

    Raises:
      BadDataError: the file is empty or undecodable.
    """
    data = source.read_bytes()
    decoded = common.decode_image(data, source.name)
    array = common.to_image(decoded, self.num_channels, self.image_dtype, source.name)
    native_mode = {1: 'L', 3: 'RGB'}[self.num_channels]
    if (
      decoded.format == 'JPEG'
      and decoded.mode == native_mode
      and self.image_dtype == np.uint8
    ):
      return data, array
    return array, array

  def read_binary_pair(
    self, image_file: common.SourceFile, mask_file: common.SourceFile
  ) -> dict[str, Any]:
    """Reads an image and its binary (0/255 or 0/1) mask file.

    Raises:
      BadDataError: a file is bad, the mask's values fit no binary encoding or
        its size differs from the image's.
    """
    value, array = self.read_image(image_file)
    decoded = common.decode_image(mask_file.read_bytes(), mask_file.name)
    mask = common.binary_mask(
      common.mask_values(decoded, mask_file.name), mask_file.name
    )
    common.check_same_size(array, mask, image_file.name, mask_file.name)
    return {'image': value, 'mask': mask}

  def paired_examples(
    self, manual_dir: pathlib.Path, image_dir: pathlib.Path, mask_dir: pathlib.Path
  ) -> list[Example]:
    """Returns examples pairing the images and masks of two folders by stem.

    Args:
      manual_dir: the manual folder, for messages.
      image_dir: the folder of images.
      mask_dir: the folder of masks.

    Raises:
      BadDataError: unpaired files, unless skipping bad files.
      DataNotFoundError: no pair at all.
    """
    pairs, lone_images, lone_masks = layout.pair_by_stem(
      layout.list_images(image_dir), layout.list_images(mask_dir)
    )
    if not pairs:
      raise self.not_found(
        manual_dir,
        f'no image in {image_dir} has a mask of the same name in {mask_dir}',
      )
    self.report_unpaired(lone_images, lone_masks, image_dir, mask_dir)
    return [Example(stem, image, mask) for stem, image, mask in pairs]


class FolderPairBuilder(SegmentationBuilder, skip_registration=True):
  """A binary data set stored as a folder of images and a folder of masks.

  Subclasses name the two folders; files are paired by stem.
  """

  IMAGE_FOLDER = ''
  MASK_FOLDER = ''

  def _find_examples(self, manual_dir: pathlib.Path) -> list[Example]:
    image_dir = layout.find_dir(manual_dir, [self.IMAGE_FOLDER])
    mask_dir = layout.find_dir(manual_dir, [self.MASK_FOLDER])
    if image_dir is None or mask_dir is None:
      missing = self.IMAGE_FOLDER if image_dir is None else self.MASK_FOLDER
      raise self.not_found(manual_dir, f'no folder {missing!r} found')
    return self.paired_examples(manual_dir, image_dir, mask_dir)

  def _load_example(self, example: Example) -> dict:
    return self.read_binary_pair(example.image, example.mask)
