"""`isbi2012`: neuronal membranes in serial-section EM (ISBI 2012 challenge).

The training stack of the ISBI 2012 EM segmentation challenge: 30 sections
(512x512, grey, ssTEM of the Drosophila first instar larva ventral nerve cord)
with labels marking cell interiors (255) and membranes (0).

Source: https://imagej.net/events/isbi-2012-segmentation-challenge (formerly
http://brainiac2.mit.edu/isbi_challenge/). Licence: not stated; the
organisers ask users to cite Cardona et al. 2010 and Arganda-Carreras et al.
2015.

Expected files in the manual folder (`--manual_dir`), possibly one or two
folders deep:

  train-volume.tif    30-page TIFF of 512x512 8-bit sections
  train-labels.tif    30-page TIFF of the labels, 0/255

Features: `image` uint8 H x W x 1, `mask` uint8 H x W x 1 with 1 = cell
interior (label 255) and 0 = membrane, `id` = `page_NN` (the page index).
Splits by page index, so neighbouring sections stay together: train = pages
0-20, validation = 21-23, test = 24-29; paper_train / paper_test is the
paper's seeded 80/20 split of the pages (seed 42; paper_test is both its
validation and test set). A file that cannot be read at all stops the build
even with skip_bad_files=True (there would be nothing to build).
"""

import pathlib

import numpy as np

from sharp_unet_jax.data.datasets import base, common, layout
from sharp_unet_jax.errors import BadDataError

_CITATION = r"""@article{arganda2015crowdsourcing,
  title = {Crowdsourcing the creation of image segmentation algorithms for
    connectomics},
  author = {Arganda-Carreras, Ignacio and Turaga, Srinivas C. and
    Berger, Daniel R. and Cire{\c{s}}an, Dan and Giusti, Alessandro and
    Gambardella, Luca M. and Schmidhuber, J{\"u}rgen and Laptev, Dmitry and
    Dwivedi, Sarvesh and Buhmann, Joachim M. and others},
  journal = {Frontiers in Neuroanatomy},
  volume = {9},
  pages = {142},
  year = {2015}
}
@article{cardona2010integrated,
  title = {An integrated micro- and macroarchitectural analysis of the
    {Drosophila} brain by computer-assisted serial section electron
    microscopy},
  author = {Cardona, Albert and Saalfeld, Stephan and Preibisch, Stephan and
    Schmid, Benjamin and Cheng, Anchi and Pulokas, Jim and
    Tomancak, Pavel and Hartenstein, Volker},
  journal = {PLoS Biology},
  volume = {8},
  number = {10},
  pages = {e1000502},
  year = {2010}
}"""

_VOLUME = 'train-volume.tif'
_LABELS = 'train-labels.tif'


def _read_stack(path: pathlib.Path) -> np.ndarray:
  """Returns the pages of a multi-page TIFF as N x H x W (x C)."""
  source = common.SourceFile(path)
  return common.decode_tiff_pages(source.read_bytes(), source.name)


class Isbi2012(base.SegmentationBuilder):
  """ISBI 2012 EM sections with cell-interior masks; see the module docstring."""

  NUM_CHANNELS = 1
  LAYOUT = f'{_VOLUME} and {_LABELS} (multi-page TIFFs)'
  SOURCE = 'https://imagej.net/events/isbi-2012-segmentation-challenge'
  CONFIG_FILE = 'isbi2012.py'
  HOMEPAGE = SOURCE
  CITATION = _CITATION
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f'Download {_VOLUME} and {_LABELS} from {SOURCE} into the manual folder.'
  )

  def _find_examples(self, manual_dir: pathlib.Path) -> list[base.Example]:
    paths = {}
    for name in (_VOLUME, _LABELS):
      path = layout.find_file(manual_dir, [name, name + 'f'])
      if path is None:
        raise self.not_found(manual_dir, f'no file {name} found')
      paths[name] = path
    volume, labels = _read_stack(paths[_VOLUME]), _read_stack(paths[_LABELS])
    if len(volume) != len(labels):
      raise BadDataError(
        f'{self.name}: {paths[_VOLUME]} has {len(volume)} pages but '
        f'{paths[_LABELS]} has {len(labels)}'
      )
    self._stacks = {'image': volume, 'mask': labels, 'paths': paths}
    width = max(2, len(str(len(volume) - 1)))
    return [base.Example(f'page_{i:0{width}d}', i, i) for i in range(len(volume))]

  def _make_splits(self, dl_manager):
    examples = self._find_examples(self._manual_path(dl_manager))
    return self.default_splits(examples, ordered=True)

  def _load_example(self, example: base.Example) -> dict:
    paths = self._stacks['paths']
    image_name = f'{paths[_VOLUME]} page {example.image}'
    mask_name = f'{paths[_LABELS]} page {example.mask}'
    page = self._stacks['image'][example.image]
    image = common.to_image(
      common.DecodedImage(page, 'TIFF'), 1, self.image_dtype, image_name
    )
    values = common.mask_values(
      common.DecodedImage(self._stacks['mask'][example.mask], 'TIFF'), mask_name
    )
    mask = common.binary_mask(values, mask_name)
    common.check_same_size(image, mask, image_name, mask_name)
    return {'image': image, 'mask': mask}
