"""Tiny config for tests: a few steps on a small synthetic set, in seconds."""

from configs import default


def get_config():
  """Returns the default config shrunk to run in seconds."""
  config = default.get_config()
  # 64 train / 16 validation / 16 test synthetic images.
  config.dataset = 'synthetic_lesions/small'
  config.image_size = (32, 32)
  config.num_filters = 4
  config.depth = 2
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  config.num_summary_images = 2
  return config
