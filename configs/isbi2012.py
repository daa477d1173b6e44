"""Sharp U-Net on ISBI 2012 EM membranes (cell interiors), with the paper's settings.

Build the data set once, then train (DIR = the downloaded source files):

  python -m sharp_unet_jax.data.datasets.build --manual_dir=DIR isbi2012
  python main.py --config=configs/isbi2012.py --workdir=WORKDIR

(or pass `--config.manual_dir=DIR` to main.py, which builds it on first use).
DIR holds train-volume.tif and train-labels.tif; images are resized from
512x512 as in the paper. See sharp_unet_jax/data/datasets/isbi2012.py.

Splits: train / validation / test (an independent test set). The paper's
protocol, with no independent test set: `--config=configs/paper.py:isbi2012`.
"""

from configs import paper_settings


def get_config():
  """Returns the config for isbi2012 with the paper's settings."""
  # Train split: 21 of the 30 sections.
  return paper_settings.get_paper_config(
    dataset='isbi2012',
    image_size=(256, 256),
    num_channels=1,
    num_classes=1,
    num_train_examples=21,
  )
