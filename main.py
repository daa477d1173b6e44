"""Trains (Sharp) U-Net.

  python main.py --config=configs/default.py --workdir=/tmp/sharp_unet \
      [--config.model=unet --config.num_train_steps=2000 ...]

Launching again with the same --workdir resumes from its latest checkpoint.
For several hosts, see the README's "Scaling out" section.
"""

import logging as pylogging
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sharp_unet_jax import cli, train  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, summaries and results.')
config_flags.DEFINE_config_file(
  'config', None, 'Training config file (configs/*.py).', lock_config=True
)
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(pylogging.Filter):
  """Drops the INFO chatter of Orbax and TFDS; their warnings still show."""

  def filter(self, record):
    noisy = ('/orbax/', '/tensorflow_datasets/')
    return record.levelno >= pylogging.WARNING or not any(
      part in record.pathname for part in noisy
    )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  logging.info(
    'JAX process %d/%d, local devices: %s',
    jax.process_index(),
    jax.process_count(),
    jax.local_devices(),
  )
  results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  if jax.process_index() == 0:
    print(
      f'Test ({results["split"]}, {results["num_examples"]} images) at step '
      f'{results["step"]}: dice={results["dice"]:.4f} iou={results["iou"]:.4f} '
      f'dice_per_image={results["dice_per_image"]:.4f} '
      f'iou_per_image={results["iou_per_image"]:.4f}'
    )
    workdir = os.path.abspath(FLAGS.workdir)
    print(
      f'Results: {os.path.join(workdir, "test_metrics.json")}; '
      f'TensorBoard: tensorboard --logdir={workdir}'
    )


if __name__ == '__main__':
  cli.run(main)
