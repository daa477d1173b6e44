"""Sharp U-Net on CVC-ClinicDB colon polyps, with the paper's settings.

Build the data set once, then train (DIR = the downloaded source files):

  python -m sharp_unet_jax.datasets.build --manual_dir=DIR cvc_clinicdb
  python main.py --config=configs/cvc_clinicdb.py --workdir=WORKDIR

(or pass `--config.manual_dir=DIR` to main.py, which builds it on first use).
DIR holds Original/ and 'Ground Truth'/; see
sharp_unet_jax/datasets/cvc_clinicdb.py.

The splits are train / validation / test, an independent test set. For the
paper's protocol (a seeded 80/20 split whose 20 % is both the validation and
the test set, so no independent test) add
`--config.train_split=paper_train --config.eval_split=paper_test
--config.test_split=paper_test`.
"""

from configs import default


def get_config():
  """Returns the config for cvc_clinicdb."""
  config = default.get_config()

  # --- Data -------------------------------------------------------------------
  config.dataset = 'cvc_clinicdb'
  config.train_split = 'train'
  config.eval_split = 'validation'
  config.test_split = 'test'
  # The paper's input size (height, width).
  config.image_size = (192, 256)
  # RGB.
  config.num_channels = 3
  # 1 = binary lesion/background mask (sigmoid, binary cross-entropy).
  config.num_classes = 1

  # --- Model (the paper's) ------------------------------------------------------
  config.model = 'sharp_unet'
  config.num_filters = 32
  config.depth = 4

  # --- Optimiser and loss (the paper's) -----------------------------------------
  config.batch_size = 16
  config.learning_rate = 1e-3
  config.loss = 'cross_entropy'

  # --- Schedule -------------------------------------------------------------------
  # About 100 epochs of the train split (428 of 612 frames); the paper stopped
  # early on the validation score instead.
  config.num_train_steps = 2700

  # --- Evaluation, logging and checkpoints (about every 10 epochs) ---------------
  config.eval_every_steps = 270
  config.checkpoint_every_steps = 270
  config.log_every_steps = 27

  return config
