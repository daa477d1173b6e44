"""`lung_ct`: lung fields in 2D CT slices (Kaggle "Finding and Measuring Lungs").

267 axial CT slices (512x512, grey) with binary lung masks, from Kevin Mader's
Kaggle data set "Finding and Measuring Lungs in CT Data".

Source: https://www.kaggle.com/datasets/kmader/finding-lungs-in-ct-data
(Kaggle login needed). Licence: not stated by the Sharp U-Net reference code;
see the Kaggle page for its terms.

Expected layout in the manual folder (`--manual_dir`), possibly one or two
folders deep (folder names match ignoring case):

  2d_images/ID_0000_Z_0142.tif ...   CT slices, 8- or 16-bit grey
  2d_masks/ID_0000_Z_0142.tif ...    masks, 0/255 (0/1 accepted), same names

Images and masks pair by file stem (TIFF, PNG or JPEG). Features: `image`
uint8 H x W x 1 (16-bit slices scaled to 8 bits), `mask` uint8 H x W x 1 of
0/1, `id` the file stem. Splits: train / validation / test (70/10/20, by a
hash of the id) and paper_train / paper_test (the paper's 80/20 split, seed
42; paper_test is both its validation and test set).
"""

from sharp_unet_jax.data.datasets import base

_CITATION = r"""@misc{mader2017lungs,
  author = {Mader, Kevin},
  title = {Finding and Measuring Lungs in {CT} Data},
  howpublished = {Kaggle data set,
    \url{https://www.kaggle.com/datasets/kmader/finding-lungs-in-ct-data}},
  year = {2017}
}"""


class LungCt(base.FolderPairBuilder):
  """Lung CT slices with binary lung masks; see the module docstring."""

  NUM_CHANNELS = 1
  LAYOUT = '2d_images/*.tif and 2d_masks/*.tif with the same file names'
  SOURCE = (
    'https://www.kaggle.com/datasets/kmader/finding-lungs-in-ct-data '
    '(Kaggle login needed; extract 2d_images.zip and 2d_masks.zip)'
  )
  IMAGE_FOLDER = '2d_images'
  MASK_FOLDER = '2d_masks'
  CONFIG_FILE = 'lung_ct.py'
  HOMEPAGE = 'https://www.kaggle.com/datasets/kmader/finding-lungs-in-ct-data'
  CITATION = _CITATION
  MANUAL_DOWNLOAD_INSTRUCTIONS = base.extract_instructions(
    'the data set', SOURCE, LAYOUT
  )
