"""Trains (Sharp) U-Net.

  python main.py --config=configs/default.py --workdir=/tmp/sharp_unet \
      [--config.model=unet --config.num_train_steps=2000 ...]

Launching again with the same --workdir resumes from its latest checkpoint.
Several hosts: pass --distributed (TPU pods, SLURM: JAX finds its peers) or
--coordinator_address, --num_processes and --process_id on every host.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags, logging  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sharp_unet_jax import cli  # noqa: E402
from sharp_unet_jax.training import distributed, train  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, summaries and results.')
config_flags.DEFINE_config_file(
  'config', None, 'Training config file (configs/*.py).', lock_config=True
)
distributed.define_flags()
flags.DEFINE_string(
  'compilation_cache_dir',
  os.environ.get(
    'JAX_COMPILATION_CACHE_DIR', os.path.expanduser('~/.cache/sharp_unet_jax/xla')
  ),
  "JAX's persistent compilation cache: a second launch skips compilation. "
  'Empty to disable.',
)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv  # cli.run refuses positional arguments.
  if FLAGS.compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', FLAGS.compilation_cache_dir)
  distributed.initialize()
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)  # progress is logged by process 0
  logging.info(
    'JAX process %d/%d, local devices: %s',
    jax.process_index(),
    jax.process_count(),
    jax.local_devices(),
  )
  results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  if jax.process_index() != 0:
    return
  workdir = os.path.abspath(FLAGS.workdir)
  if results.get('preempted'):
    print(
      f'Preempted: checkpoint saved at step {results["step"]} in {workdir}; '
      'run the same command again to resume.'
    )
    return
  print(
    f'Test ({results["split"]}, {results["num_examples"]} images) at step '
    f'{results["step"]}: dice={results["dice"]:.4f} iou={results["iou"]:.4f} '
    f'dice_per_image={results["dice_per_image"]:.4f} '
    f'iou_per_image={results["iou_per_image"]:.4f}'
  )
  print(
    f'Results: {os.path.join(workdir, "test_metrics.json")}; '
    f'TensorBoard: tensorboard --logdir={workdir}'
  )


if __name__ == '__main__':
  cli.run(main)
