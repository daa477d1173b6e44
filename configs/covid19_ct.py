"""Sharp U-Net on COVID-19 CT (MedSeg), 4 classes, with the paper's settings.

Build the data set once, then train (DIR = the downloaded source files):

  python -m sharp_unet_jax.datasets.build --manual_dir=DIR covid19_ct
  python main.py --config=configs/covid19_ct.py --workdir=WORKDIR

(or pass `--config.manual_dir=DIR` to main.py, which builds it on first use).
DIR holds tr_im.nii.gz and tr_mask.nii.gz; images are the HU window
[-512, 512] scaled to [0, 1]. See sharp_unet_jax/datasets/covid19_ct.py.

The splits are train / validation / test, an independent test set. For the
paper's protocol (a seeded 80/20 split whose 20 % is both the validation and
the test set, so no independent test) add
`--config.train_split=paper_train --config.eval_split=paper_test
--config.test_split=paper_test`.
"""

from configs import default


def get_config():
  """Returns the config for covid19_ct."""
  config = default.get_config()

  # --- Data -------------------------------------------------------------------
  config.dataset = 'covid19_ct'
  config.train_split = 'train'
  config.eval_split = 'validation'
  config.test_split = 'test'
  # The paper's input size (height, width).
  config.image_size = (512, 512)
  # Grey.
  config.num_channels = 1
  # Background, ground-glass, consolidation, pleural effusion (softmax,
  # categorical cross-entropy).
  config.num_classes = 4

  # --- Model (the paper's) ------------------------------------------------------
  config.model = 'sharp_unet'
  config.num_filters = 32
  config.depth = 4

  # --- Optimiser and loss (the paper's) -----------------------------------------
  config.batch_size = 16
  config.learning_rate = 1e-3
  config.loss = 'cross_entropy'

  # --- Schedule -------------------------------------------------------------------
  # About 100 epochs of the train split (70 of 100 slices); the paper stopped
  # early on the validation score instead.
  config.num_train_steps = 500

  # --- Evaluation, logging and checkpoints (about every 10 epochs) ---------------
  config.eval_every_steps = 50
  config.checkpoint_every_steps = 50
  config.log_every_steps = 5

  return config
