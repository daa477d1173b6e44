"""`cvc_clinicdb`: colon polyps in colonoscopy frames (CVC-ClinicDB).

612 frames (384x288 RGB) from 31 colonoscopy sequences, each with a binary
polyp mask.

Source: https://polyp.grand-challenge.org/CVCClinicDB/ (the database may be
used for research, citing Bernal et al. 2015; no other licence is stated).

Expected layout in the manual folder (`--manual_dir`), possibly one or two
folders deep:

  Original/1.tif ... 612.tif         frames, RGB
  Ground Truth/1.tif ... 612.tif     masks, 0/255 (0/1 accepted)

Folder names match ignoring case, spaces, '-' and '_' (`original`,
`GroundTruth`, `Ground_Truth` all work); files pair by stem and may be TIFF or
PNG. Features: `image` uint8 H x W x 3, `mask` uint8 H x W x 1 of 0/1, `id`
the file stem. Splits: train / validation / test (70/10/20, by a hash of the
id) and paper_train / paper_test (the paper's 80/20 split, seed 42;
paper_test is both its validation and test set). Frames of one sequence look
alike and the hash split ignores sequences, so expect optimistic scores, as in
the paper.
"""

from sharp_unet_jax.data.datasets import base

_CITATION = r"""@article{bernal2015wm,
  title = {{WM-DOVA} maps for accurate polyp highlighting in colonoscopy:
    Validation vs. saliency maps from physicians},
  author = {Bernal, Jorge and S{\'a}nchez, F. Javier and
    Fern{\'a}ndez-Esparrach, Gloria and Gil, Debora and
    Rodr{\'\i}guez, Cristina and Vilari{\~n}o, Fernando},
  journal = {Computerized Medical Imaging and Graphics},
  volume = {43},
  pages = {99--111},
  year = {2015}
}"""


class CvcClinicdb(base.FolderPairBuilder):
  """CVC-ClinicDB colonoscopy frames with polyp masks; see the module docstring."""

  LAYOUT = "Original/<n>.tif and 'Ground Truth'/<n>.tif (TIFF or PNG)"
  SOURCE = 'https://polyp.grand-challenge.org/CVCClinicDB/'
  IMAGE_FOLDER = 'Original'
  MASK_FOLDER = 'Ground Truth'
  CONFIG_FILE = 'cvc_clinicdb.py'
  HOMEPAGE = 'https://polyp.grand-challenge.org/CVCClinicDB/'
  CITATION = _CITATION
  MANUAL_DOWNLOAD_INSTRUCTIONS = base.extract_instructions(
    'CVC-ClinicDB', SOURCE, LAYOUT
  )
