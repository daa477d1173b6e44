"""Compile targets: devices of a TPU slice or GPUs, without their hardware.

A target is named by a string:

  tpu:<topology>        a Cloud TPU slice by libtpu's topology name, e.g.
                        tpu:v5e:2x2 (v5e-4), tpu:v4:2x2x1, tpu:v6e:2x2
  gpu:<chip>:<count>    one host with <count> GPUs: gpu:h100:4, gpu:h200:1, gpu:a100:8
  cpu:<count>           <count> of this host's CPU devices

TPU devices come from `jax.experimental.topologies.get_topology_desc(NAME,
platform='tpu')`, which needs the `libtpu` wheel (no TPU). GPU devices come
from the CUDA plugin (`jax-cuda12-plugin` and `jax-cuda12-pjrt`, no NVIDIA
libraries, no GPU) given a target description: a `GpuTargetConfigProto` in
text format built from the GPU's published properties (chips.py,
`gpu_target_config`), passed as `get_topology_desc(platform='cuda',
topology='1x1x<count>', target_config=TEXT)` (one slice, one host, <count>
devices). These devices can compile but not run; a ('data',) mesh over them
makes `jax.jit(...).lower(...).compile()` produce the target's program.

JAX must run with `jax_platforms='cpu'` (JAX_PLATFORMS=cpu; `aot` sets it):
asked for no GPU, the CUDA plugin skips its check for a CUDA runtime, which
fails where there is none and leaves the plugin unregistered.
"""

import dataclasses
import os
from typing import Optional

import jax

from sharp_unet_jax.compilation import chips, meshes
from sharp_unet_jax.errors import UserError

_HELP = (
  'use tpu:<topology> (e.g. tpu:v5e:2x2), gpu:<chip>:<count> (chip one of '
  f'{", ".join(sorted(chips.GPU_PROPERTIES))}) or cpu:<count>'
)


@dataclasses.dataclass(frozen=True)
class Target:
  """Devices to compile for.

  Attributes:
    spec: the --target string.
    platform: 'tpu', 'gpu' or 'cpu' (as the devices report it).
    devices: the (compile-only, for TPU and GPU) JAX devices.
    chip: published figures of one device; None for CPU.
  """

  spec: str
  platform: str
  devices: list
  chip: Optional[chips.Chip]

  def mesh(self) -> jax.sharding.Mesh:
    """The ('data',) mesh over all the target's devices."""
    return meshes.data_mesh(self.devices)


def _count(text: str, spec: str) -> int:
  if not text.isdigit() or int(text) < 1:
    raise UserError(f'--target={spec}: {text!r} is not a device count; {_HELP}.')
  return int(text)


def _tpu(spec: str, topology: str) -> Target:
  generation = topology.split(':')[0]
  if generation not in chips.CHIPS or generation in chips.GPU_PROPERTIES:
    tpus = sorted(set(chips.CHIPS) - set(chips.GPU_PROPERTIES))
    raise UserError(f'--target={spec}: unknown TPU {generation!r}; use one of {tpus}.')
  # Compile-only TPU clients of several processes may share one machine.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  from jax.experimental import topologies  # noqa: PLC0415

  try:
    devices = topologies.get_topology_desc(topology, platform='tpu').devices
  except RuntimeError as e:
    raise UserError(
      f'--target={spec}: {str(e).splitlines()[0]} (install requirements-aot.txt).'
    ) from e
  return Target(spec, 'tpu', list(devices), chips.CHIPS[generation])


def _gpu(spec: str, name: str, count: str) -> Target:
  if name not in chips.GPU_PROPERTIES:
    raise UserError(f'--target={spec}: unknown GPU {name!r}; {_HELP}.')
  from jax.experimental import topologies  # noqa: PLC0415

  try:
    topology = topologies.get_topology_desc(
      platform='cuda',
      topology=f'1x1x{_count(count, spec)}',
      target_config=chips.gpu_target_config(name),
    )
  except (RuntimeError, NotImplementedError) as e:
    raise UserError(
      f'--target={spec}: no CUDA compiler ({str(e).splitlines()[0]}); install '
      'requirements-aot.txt and run with JAX_PLATFORMS=cpu.'
    ) from e
  return Target(spec, 'gpu', list(topology.devices), chips.CHIPS[name])


def _cpu(spec: str, count: str) -> Target:
  devices = jax.devices('cpu')
  wanted = _count(count, spec)
  if wanted > len(devices):
    raise UserError(
      f'--target={spec}: this host has {len(devices)} CPU devices; set '
      f'XLA_FLAGS=--xla_force_host_platform_device_count={wanted} for more.'
    )
  return Target(spec, 'cpu', devices[:wanted], None)


def parse(spec: str) -> Target:
  """The devices of a --target string.

  Raises:
    UserError: for a malformed or unknown target, or missing compiler wheels.
  """
  kind, _, rest = str(spec).partition(':')
  parts = rest.split(':')
  if kind == 'tpu' and rest:
    return _tpu(spec, rest)
  if kind == 'gpu' and len(parts) == 2:
    return _gpu(spec, *parts)
  if kind == 'cpu' and len(parts) == 1:
    return _cpu(spec, rest)
  raise UserError(f'--target={spec!r}: {_HELP}.')
