"""The paper's training protocol on top of any data set config.

  python main.py --config=configs/paper.py:dsb2018 --workdir=DIR
  python -m sharp_unet_jax.experiment --config=configs/paper.py:isic \
      --workdir=DIR --seeds=5

The part after ':' names a config file of this folder (default: `default`,
the synthetic data). On top of it, as the reference Keras code trains:

- splits paper_train / paper_test / paper_test: the seeded 80/20 split whose
  20 % is both the validation and the test set (no independent test set; the
  real data sets have these splits, synthetic_lesions keeps its own);
- validation every epoch (eval_every_steps = one pass over paper_train);
- reduce-on-plateau on the validation soft Jaccard (factor 0.1, patience 10
  evaluations, min_delta 1e-4, min lr 1e-8) and early stopping on it
  (patience 20, best state restored for the test), with the best checkpoint
  in WORKDIR/checkpoints_best; COVID-19 CT monitors the validation loss with
  patience 10 for both, as in the reference code;
- at most 300 epochs (the reference code has no limit: early stopping ends it).

Everything else (model, Adam, binary/categorical cross-entropy, batch 16, no
augmentation) is already the paper's in the data set configs.
"""

import importlib
import math

# Images in each data set's paper_train split (80 % of the images).
PAPER_TRAIN_SIZES = {
  'lung_ct': 213,
  'dsb2018': 536,
  'isic2018': 2075,
  'covid19_ct': 80,
  'isbi2012': 24,
  'cvc_clinicdb': 489,
}
MAX_EPOCHS = 300


def get_config(base: str = 'default'):
  """Returns configs/<base>.py's config with the paper's training protocol."""
  config = importlib.import_module(f'configs.{base}').get_config()
  dataset = config.dataset.split('/')[0]
  if dataset in PAPER_TRAIN_SIZES:
    config.train_split = 'paper_train'
    config.eval_split = 'paper_test'
    config.test_split = 'paper_test'
    epoch = max(1, math.ceil(PAPER_TRAIN_SIZES[dataset] / config.batch_size))
    config.eval_every_steps = epoch
    config.checkpoint_every_steps = 10 * epoch
    config.log_every_steps = epoch
    config.num_train_steps = MAX_EPOCHS * epoch
  config.schedule = 'plateau'
  config.plateau_factor = 0.1
  config.plateau_patience = 10
  config.plateau_min_delta = 1e-4
  config.plateau_min_lr = 1e-8
  config.early_stopping = True
  config.early_stopping_patience = 20
  config.save_best_checkpoint = True
  config.monitor_metric = 'soft_iou'
  config.monitor_mode = 'max'
  if dataset == 'covid19_ct':
    config.monitor_metric = 'loss'
    config.monitor_mode = 'min'
    config.plateau_patience = 10
    config.early_stopping_patience = 10
  config.augment.enabled = False
  return config
