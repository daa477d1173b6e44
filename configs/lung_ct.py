"""Sharp U-Net on lung CT slices (Kaggle lungs), with the paper's settings.

Build the data set once, then train (DIR = the downloaded source files):

  python -m sharp_unet_jax.data.datasets.build --manual_dir=DIR lung_ct
  python main.py --config=configs/lung_ct.py --workdir=WORKDIR

(or pass `--config.manual_dir=DIR` to main.py, which builds it on first use).
DIR holds 2d_images/ and 2d_masks/; see sharp_unet_jax/data/datasets/lung_ct.py.

Splits: train / validation / test (an independent test set). The paper's
protocol, with no independent test set: `--config=configs/paper.py:lung_ct`.
"""

from configs import paper_settings


def get_config():
  """Returns the config for lung_ct with the paper's settings."""
  # Train split: 187 of the 267 slices.
  return paper_settings.get_paper_config(
    dataset='lung_ct',
    image_size=(256, 256),
    num_channels=1,
    num_classes=1,
    num_train_examples=187,
  )
