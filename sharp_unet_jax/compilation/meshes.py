"""The one-axis ('data',) device mesh that steps are compiled over.

Steps are built for a mesh, not for the attached devices, so the same code
compiles for the local CPU, for a TPU slice or for GPUs described without
their hardware (see targets.py). The mesh's devices name the platform that
decides the compiler options (xla_options.py).

Inside a step, `batch_sharding` and `shard_over_batch` run a function on each
device's part of a batch sharded over the mesh (the network's packed form,
model/network.py, and on-device augmentation, data/augment.py). This module
imports nothing of the package, so the model and the data may use it.
"""

from typing import Callable, Optional, Sequence

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
import numpy as np

AXIS = 'data'


def data_mesh(devices: Optional[Sequence] = None) -> Mesh:
  """A ('data',) mesh over `devices`; None: every device of every process.

  `jax.make_mesh` orders the devices for the hardware's interconnect (and
  keeps each process's devices together). The axis is Explicit whatever this
  jax's default: augment.augment_batch reads the batch sharding from its type
  and augments shard by shard.
  """
  devices = jax.devices() if devices is None else list(devices)
  if any(getattr(device, 'core_on_chip', 0) for device in devices):
    # One device per TensorCore (libtpu's compile-only v4 topologies), which
    # jax.make_mesh refuses: it wants one (megacore) device per chip.
    return Mesh(np.asarray(devices), (AXIS,), axis_types=(AxisType.Explicit,))
  return jax.make_mesh(
    (len(devices),), (AXIS,), devices=devices, axis_types=(AxisType.Explicit,)
  )


def platform(mesh: Mesh) -> str:
  """The platform the mesh's devices compile for: 'cpu', 'gpu' or 'tpu'."""
  return mesh.devices.flat[0].platform


def batch_sharding(x: jax.Array) -> Optional[NamedSharding]:
  """The sharding of x's leading (batch) axis over x's mesh, read from x's
  type; None when that axis is not sharded (one device, or no mesh)."""
  sharding = jax.typeof(x).sharding
  spec = getattr(sharding, 'spec', None)
  if not spec or spec[0] is None:
    return None
  return NamedSharding(sharding.mesh, PartitionSpec(spec[0]))


def shard_over_batch(
  fn: Callable, batch: NamedSharding, batched: Sequence[bool]
) -> Callable:
  """`fn` run on each device's part of the batch (`jax.shard_map`).

  Args:
    fn: the per-device function.
    batch: the batch's sharding (`batch_sharding`).
    batched: per argument of fn, True to split it along its leading axis as
      the batch is, False to give every device all of it (replicated).

  Returns:
    The function over global arrays; its outputs are split like the batch.
  """
  in_specs = tuple(batch.spec if split else PartitionSpec() for split in batched)
  return jax.shard_map(fn, mesh=batch.mesh, in_specs=in_specs, out_specs=batch.spec)
