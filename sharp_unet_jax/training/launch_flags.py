"""The flags that launch several processes, without importing JAX.

main.py, evaluate and predict take the same flags: --distributed (TPU pods,
SLURM: JAX finds its peers) or --coordinator_address, --num_processes and
--process_id on every host. With them, a program's first process only
supervises a child that runs the work (training.supervisor); kept free of
JAX, that parent starts the child without seconds of imports first.
"""

from absl import flags

FLAGS = flags.FLAGS
DEFAULT_HEARTBEAT_TIMEOUT_S = 60.0


def define() -> None:
  """Defines the flags that start JAX's distributed runtime."""
  flags.DEFINE_bool(
    'distributed',
    False,
    'Initialise jax.distributed from the environment (TPU, SLURM).',
  )
  flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
  flags.DEFINE_integer('num_processes', None, 'Number of processes in the run.')
  flags.DEFINE_integer('process_id', None, 'Index of this process, 0..num_processes-1.')
  flags.DEFINE_float(
    'heartbeat_timeout',
    DEFAULT_HEARTBEAT_TIMEOUT_S,
    'Seconds without a heartbeat after which a peer process counts as lost: '
    'every other process then stops with one error line and exit status 75. '
    "JAX's runtime gets 2x this plus 30 s as its own, later, timeout.",
  )


def requested() -> bool:
  """Whether the command line asks for several processes (False without the flags)."""
  if 'coordinator_address' not in FLAGS:
    return False
  explicit = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
  return bool(FLAGS.distributed) or any(value is not None for value in explicit)
