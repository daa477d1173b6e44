"""Sharp U-Net on Data Science Bowl 2018 nuclei (BBBC038), with the paper's settings.

Build the data set once, then train (DIR = the downloaded source files):

  python -m sharp_unet_jax.data.datasets.build --manual_dir=DIR dsb2018
  python main.py --config=configs/dsb2018.py --workdir=WORKDIR

(or pass `--config.manual_dir=DIR` to main.py, which builds it on first use).
DIR holds stage1_train/; see sharp_unet_jax/data/datasets/dsb2018.py.

Splits: train / validation / test (an independent test set). The paper's
protocol, with no independent test set: `--config=configs/paper.py:dsb2018`.
"""

from configs import paper_settings


def get_config():
  """Returns the config for dsb2018 with the paper's settings."""
  # Train split: 469 of the 670 images.
  return paper_settings.get_paper_config(
    dataset='dsb2018',
    image_size=(256, 256),
    num_channels=3,
    num_classes=1,
    num_train_examples=469,
  )
