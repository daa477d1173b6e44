"""Sharp U-Net on CVC-ClinicDB colon polyps, with the paper's settings.

Build the data set once, then train (DIR = the downloaded source files):

  python -m sharp_unet_jax.data.datasets.build --manual_dir=DIR cvc_clinicdb
  python main.py --config=configs/cvc_clinicdb.py --workdir=WORKDIR

(or pass `--config.manual_dir=DIR` to main.py, which builds it on first use).
DIR holds Original/ and 'Ground Truth'/; see
sharp_unet_jax/data/datasets/cvc_clinicdb.py.

Splits: train / validation / test (an independent test set). The paper's
protocol, with no independent test set: `--config=configs/paper.py:cvc_clinicdb`.
"""

from configs import paper_settings


def get_config():
  """Returns the config for cvc_clinicdb with the paper's settings."""
  # Train split: 428 of the 612 frames.
  return paper_settings.get_paper_config(
    dataset='cvc_clinicdb',
    image_size=(192, 256),
    num_channels=3,
    num_classes=1,
    num_train_examples=428,
  )
