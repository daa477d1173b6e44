"""Trains (Sharp) U-Net.

  python main.py --config=configs/default.py --workdir=/tmp/sharp_unet \
      [--config.model=unet --config.num_train_steps=2000 ...]

Launching again with the same --workdir resumes from its latest checkpoint.
Several hosts: pass --distributed (TPU pods, SLURM: JAX finds its peers) or
--coordinator_address, --num_processes and --process_id on every host.

Exit status: 0 done (or preempted by SIGTERM after saving), 2 bad input, 75 a
host failed, stopped responding (--heartbeat_timeout) or hung (--step_timeout):
relaunch the same command on every host to resume.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sharp_unet_jax import cli, workdirs  # noqa: E402
from sharp_unet_jax.training import launch_flags, watchdog  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, summaries and results.')
config_flags.DEFINE_config_file(
  'config', None, 'Training config file (configs/*.py).', lock_config=True
)
launch_flags.define()
flags.DEFINE_string(
  'compilation_cache_dir',
  os.environ.get(
    'JAX_COMPILATION_CACHE_DIR', os.path.expanduser('~/.cache/sharp_unet_jax/xla')
  ),
  "JAX's persistent compilation cache: a second launch skips compilation. "
  'Empty to disable.',
)
flags.DEFINE_string(
  'step_timeout',
  'auto',
  'Seconds a train step, evaluation or checkpoint write may stall before the '
  "process writes its threads' stacks to WORKDIR/hang-<process>.txt and stops "
  "with status 75; 'auto': the larger of 300 s and 10x the median step, "
  "timed from the third step on; 'off': no watchdog.",
)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv  # cli.run refuses positional arguments.
  # Imported here, not above: a flag error or the supervising parent of a
  # multi-process run needs neither JAX nor the trainer, and answers or
  # starts its child at once. Before jax.distributed starts, so that the
  # processes' import times do not skew their first meeting.
  import jax  # noqa: PLC0415

  from sharp_unet_jax.training import distributed, train  # noqa: PLC0415

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
  timeout = watchdog.parse_timeout(FLAGS.step_timeout)
  if timeout != watchdog.OFF:
    watchdog.start(workdirs.prepare(FLAGS.workdir), timeout)
  results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  watchdog.stop()
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
