"""Sharp U-Net on COVID-19 CT (MedSeg), 4 classes, with the paper's settings.

Build the data set once, then train (DIR = the downloaded source files):

  python -m sharp_unet_jax.data.datasets.build --manual_dir=DIR covid19_ct
  python main.py --config=configs/covid19_ct.py --workdir=WORKDIR

(or pass `--config.manual_dir=DIR` to main.py, which builds it on first use).
DIR holds tr_im.nii.gz and tr_mask.nii.gz; images are the HU window
[-512, 512] scaled to [0, 1]. See sharp_unet_jax/data/datasets/covid19_ct.py.

Per-image scores (training's dice_per_image, evaluate, experiment) average
over the classes present in an image's truth or prediction: a slice without
pleural effusion, predicted without it, is not scored 1 for that class (the
paper code's rule would be; `--absent_classes=count_absent` in evaluate and
experiment restores it). Pooled scores are unchanged.

Splits: train / validation / test (an independent test set). The paper's
protocol, with no independent test set: `--config=configs/paper.py:covid19_ct`.
"""

from configs import paper_settings


def get_config():
  """Returns the config for covid19_ct with the paper's settings."""
  # Train split: 70 of the 100 slices.
  return paper_settings.get_paper_config(
    dataset='covid19_ct',
    image_size=(512, 512),
    num_channels=1,
    num_classes=4,
    num_train_examples=70,
  )
