"""How much memory a device offers a program, and this machine as a target.

A compile-only target's device memory is its chip's published figure
(chips.py). A device of this machine reports its own (`memory_stats()`'s
`bytes_limit`, which XLA's allocator will hand out) on TPU and GPU; CPU
devices report none and share the host's memory, so each is given an equal
share of what the host has available now.
"""

import os
from typing import Optional, Sequence

import jax

from sharp_unet_jax.compilation import chips, targets
from sharp_unet_jax.errors import UserError

GIB = 2**30
DEFAULT_FRACTION = 0.9  # of a device's memory, when no limit is given


def local_target() -> targets.Target:
  """This machine's own devices (of JAX's default backend) as a target."""
  devices = jax.devices()
  kind = devices[0].device_kind
  chip = next((c for c in chips.CHIPS.values() if c.device_kind == kind), None)
  platform = devices[0].platform
  return targets.Target(
    'local', 'gpu' if platform == 'cuda' else platform, devices, chip
  )


def resolve(spec: str) -> targets.Target:
  """A --target string, or 'local', as a Target.

  Raises:
    UserError: for a malformed or unknown target.
  """
  return local_target() if spec == 'local' else targets.parse(spec)


def _host_available_bytes() -> Optional[int]:
  try:
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  except (ValueError, OSError, AttributeError):
    return None


def device_memory_bytes(devices: Sequence, chip=None) -> Optional[int]:
  """Memory of one device: the chip's figure, the device's own report, or
  (CPU) a share of the host's available memory; None if none is known."""
  if chip is not None:
    return chip.memory_bytes
  stats = None
  try:
    stats = devices[0].memory_stats()
  except Exception:  # noqa: BLE001  compile-only and some backends report none
    stats = None
  if stats and stats.get('bytes_limit'):
    return int(stats['bytes_limit'])
  if devices[0].platform == 'cpu':
    available = _host_available_bytes()
    return available // len(devices) if available else None
  return None


def budget_bytes(target: targets.Target, memory_limit_gib: Optional[float]) -> int:
  """The peak bytes per device a program may use: --memory_limit_gib, or
  DEFAULT_FRACTION of the device's memory.

  Raises:
    UserError: for a limit that is not positive, or no known device memory.
  """
  if memory_limit_gib is not None:
    if memory_limit_gib <= 0:
      raise UserError(f'--memory_limit_gib={memory_limit_gib} must be positive.')
    return int(memory_limit_gib * GIB)
  memory = device_memory_bytes(target.devices, target.chip)
  if not memory:
    raise UserError(
      f'--target={target.spec}: its device memory is unknown; pass --memory_limit_gib.'
    )
  return int(DEFAULT_FRACTION * memory)
