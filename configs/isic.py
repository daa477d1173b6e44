"""Sharp U-Net on ISIC 2018 Task 1 skin lesions, with the paper's settings.

Build the data set once, then train (DIR = the downloaded source files):

  python -m sharp_unet_jax.datasets.build --manual_dir=DIR isic2018
  python main.py --config=configs/isic.py --workdir=WORKDIR

(or pass `--config.manual_dir=DIR` to main.py, which builds it on first use).
Put the official zip files (or extracted folders) in DIR, or build with
`isic2018/download=True`; see sharp_unet_jax/datasets/isic2018.py.

The splits are train / validation / test, an independent test set. For the
paper's protocol (a seeded 80/20 split whose 20 % is both the validation and
the test set, so no independent test) add
`--config.train_split=paper_train --config.eval_split=paper_test
--config.test_split=paper_test`.
"""

from configs import default


def get_config():
  """Returns the config for isic2018."""
  config = default.get_config()

  # --- Data -------------------------------------------------------------------
  config.dataset = 'isic2018'
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
  # About 100 epochs of the train split (all 2,594 training images when the
  # official validation and test sets are present, else 70 % of them); the
  # paper stopped early on the validation score instead.
  config.num_train_steps = 16000

  # --- Evaluation, logging and checkpoints (about every 10 epochs) ---------------
  config.eval_every_steps = 1600
  config.checkpoint_every_steps = 1600
  config.log_every_steps = 160

  return config
