"""Several processes: the launch flags, and sharing work and results.

main.py, evaluate and predict take the same flags: --distributed (TPU pods,
SLURM: JAX finds its peers) or --coordinator_address, --num_processes and
--process_id on every host.
"""

import pickle
from typing import Any, Sequence

from absl import flags
import jax
from jax.experimental import multihost_utils
import numpy as np

from sharp_unet_jax.errors import UserError
from sharp_unet_jax.training import liveness

FLAGS = flags.FLAGS
DEFAULT_HEARTBEAT_TIMEOUT_S = 60.0


def define_flags() -> None:
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


def initialize() -> None:
  """Starts JAX's distributed runtime when the flags ask for it.

  With several processes, the peer monitor (`liveness`) then watches the
  others: a peer silent for --heartbeat_timeout seconds ends this process with
  one error line and status 75 (`failures.EXIT_HOST_FAILURE`).

  Raises:
    UserError: when only some of the explicit flags are given.
  """
  explicit = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
  if not FLAGS.distributed and all(value is None for value in explicit):
    return
  if FLAGS.heartbeat_timeout <= 0:
    raise UserError(
      f'--heartbeat_timeout must be positive, got {FLAGS.heartbeat_timeout:g}.'
    )
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
    heartbeat_timeout_seconds=liveness.runtime_heartbeat_timeout(
      FLAGS.heartbeat_timeout
    ),
  )
  liveness.start(FLAGS.heartbeat_timeout)


def process_share(items: Sequence) -> list:
  """This process's contiguous part of `items` (all of them on one process)."""
  parts = np.array_split(np.arange(len(items)), jax.process_count())
  return [items[i] for i in parts[jax.process_index()]]


def gather_objects(value: Any) -> list:
  """`value` of every process, in process order (picklable values).

  A collective: every process must call it. On one process: [value].
  """
  if jax.process_count() == 1:
    return [value]
  payload = np.frombuffer(pickle.dumps(value), np.uint8)
  sizes = multihost_utils.process_allgather(np.array([payload.size], np.int64))
  sizes = np.asarray(sizes).reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[: payload.size] = payload
  everything = np.asarray(multihost_utils.process_allgather(padded))
  # Our own processes' payloads: pickle is safe here.
  return [pickle.loads(everything[i, :n].tobytes()) for i, n in enumerate(sizes)]
