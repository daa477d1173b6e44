"""Several processes: starting JAX's runtime, sharing work and results.

The flags that ask for it are in launch_flags.py.
"""

import pickle
from typing import Any, Sequence

from absl import flags
import jax
from jax.experimental import multihost_utils
import numpy as np

from sharp_unet_jax.errors import UserError
from sharp_unet_jax.training import launch_flags, liveness

FLAGS = flags.FLAGS


def initialize() -> None:
  """Starts JAX's distributed runtime when the flags ask for it.

  With several processes, the peer monitor (`liveness`) then watches the
  others: a peer silent for --heartbeat_timeout seconds ends this process with
  one error line and status 75 (`failures.EXIT_HOST_FAILURE`).

  Raises:
    UserError: when only some of the explicit flags are given.
  """
  if not launch_flags.requested():
    return
  explicit = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
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
