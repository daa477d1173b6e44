"""The one-axis ('data',) device mesh that steps are compiled over.

Steps are built for a mesh, not for the attached devices, so the same code
compiles for the local CPU, for a TPU slice or for GPUs described without
their hardware (see targets.py). The mesh's devices name the platform that
decides the compiler options (xla_options.py).
"""

from typing import Optional, Sequence

import jax
from jax.sharding import AxisType, Mesh
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
