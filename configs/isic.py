"""Sharp U-Net on ISIC 2018 Task 1 skin lesions, with the paper's settings.

Build the data set once, then train (DIR = the downloaded source files):

  python -m sharp_unet_jax.data.datasets.build --manual_dir=DIR isic2018
  python main.py --config=configs/isic.py --workdir=WORKDIR

(or pass `--config.manual_dir=DIR` to main.py, which builds it on first use).
Put the official zip files (or extracted folders) in DIR, or build with
`isic2018/download=True`; see sharp_unet_jax/data/datasets/isic2018.py.

Splits: train / validation / test (an independent test set). The paper's
protocol, with no independent test set: `--config=configs/paper.py:isic`.
"""

from configs import paper_settings


def get_config():
  """Returns the config for isic2018 with the paper's settings."""
  # Train split: the 2,594 official training images.
  return paper_settings.get_paper_config(
    dataset='isic2018',
    image_size=(192, 256),
    num_channels=3,
    num_classes=1,
    num_train_examples=2594,
  )
