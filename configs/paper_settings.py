"""The paper's training settings, shared by the per-data-set configs."""

import math

from configs import default


def set_paper_model(config) -> None:
  """Sets the paper's model, optimiser and loss on `config` in place."""
  config.model = 'sharp_unet'
  config.num_filters = 32
  config.depth = 4
  config.batch_size = 16
  config.learning_rate = 1e-3
  config.loss = 'cross_entropy'


def get_paper_config(
  dataset: str,
  image_size: tuple[int, int],
  num_channels: int,
  num_classes: int,
  num_train_examples: int,
  epochs: int = 100,
):
  """Returns default.py with the Sharp U-Net paper's model and optimiser.

  Args:
    dataset: TFDS name of the data set.
    image_size: the paper's input (height, width) for it.
    num_channels: 3 for RGB, 1 for grey.
    num_classes: 1 for binary masks (sigmoid, binary cross-entropy), K > 1
      for K classes with background (softmax, categorical cross-entropy).
    num_train_examples: size of its `train` split; sets the schedule.
    epochs: training length. The paper stopped early on the validation score
      instead; see README "Reproducing the paper" for that protocol.
  """
  config = default.get_config()
  # --- Data: fixed train / validation / test splits (independent test set).
  config.dataset = dataset
  config.image_size = image_size
  config.num_channels = num_channels
  config.num_classes = num_classes
  set_paper_model(config)
  # --- Schedule: `epochs` passes over the train split; evaluate, checkpoint
  # every 10 epochs and log every epoch.
  steps_per_epoch = math.ceil(num_train_examples / config.batch_size)
  config.num_train_steps = epochs * steps_per_epoch
  config.eval_every_steps = 10 * steps_per_epoch
  config.checkpoint_every_steps = 10 * steps_per_epoch
  config.log_every_steps = steps_per_epoch
  return config
