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

from sharp_unet_jax import cli, train  # noqa: E402
from sharp_unet_jax.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, summaries and results.')
config_flags.DEFINE_config_file(
  'config', None, 'Training config file (configs/*.py).', lock_config=True
)
flags.DEFINE_bool(
  'distributed', False, 'Initialise jax.distributed from the environment (TPU, SLURM).'
)
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
flags.DEFINE_integer('num_processes', None, 'Number of processes in the run.')
flags.DEFINE_integer('process_id', None, 'Index of this process, 0..num_processes-1.')
flags.DEFINE_string(
  'compilation_cache_dir',
  os.environ.get(
    'JAX_COMPILATION_CACHE_DIR', os.path.expanduser('~/.cache/sharp_unet_jax/xla')
  ),
  "JAX's persistent compilation cache: a second launch skips compilation. "
  'Empty to disable.',
)
flags.mark_flags_as_required(['config', 'workdir'])


def initialize_distributed() -> None:
  """Starts JAX's distributed runtime when the flags ask for it."""
  explicit = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
  if not FLAGS.distributed and all(value is None for value in explicit):
    return
  if not FLAGS.distributed and any(value is None for value in explicit):
    raise UserError(
      'Pass all of --coordinator_address, --num_processes and --process_id, '
      'or --distributed alone.'
    )
  # CPU processes exchange collectives over TCP with gloo; GPU and TPU ignore it.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
    coordinator_address=FLAGS.coordinator_address,
    num_processes=FLAGS.num_processes,
    process_id=FLAGS.process_id,
  )


def main(argv):
  if len(argv) > 1:
    raise UserError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', FLAGS.compilation_cache_dir)
  initialize_distributed()
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
