"""A quiet start on machines without a GPU or TPU.

Where the TPU or CUDA wheels are installed (the `[aot]` extra: libtpu and the
CUDA plugin), JAX tries each platform at start-up. On a machine without the
hardware that prints pages of errors (`Unable to load CUDA`, a traceback of
the CUDA plugin, `TPU_WORKER_HOSTNAMES`) before it falls back to the CPU.

`cpu_without_accelerators` asks JAX for the CPU only when nothing can be
hidden by it: the user has chosen no platforms (JAX_PLATFORMS or
jax.config), the machine runs Linux, and no accelerator's device node
exists. The device nodes are what the drivers create and what JAX itself
looks for (jax._src.hardware_utils), checked broadly: any NVIDIA, AMD or TPU
node counts (a false alarm only leaves the messages). Asking for the CPU is
what the messages themselves advise, and JAX_PLATFORMS set by the user always
wins. (Silencing the log instead would also hide a real accelerator's
failure.)
"""

import glob
import os
import sys
from typing import Mapping, MutableMapping, Optional

# Device nodes of accelerators, as globs: NVIDIA (also in containers), WSL2's
# GPU, AMD ROCm, TPU v2-v4 (accel) and TPU v5e and later (VFIO groups).
ACCELERATOR_NODES = (
  '/dev/nvidia[0-9]*',
  '/dev/nvidiactl',
  '/dev/dxg',
  '/dev/kfd',
  '/dev/accel*',
  '/dev/vfio/[0-9]*',
)


def accelerator_nodes(root: str = '/') -> list[str]:
  """The accelerator device nodes present under `root` (a test's fake root)."""
  found = []
  for pattern in ACCELERATOR_NODES:
    found += glob.glob(os.path.join(root, pattern.lstrip('/')))
  return sorted(found)


def cpu_without_accelerators(
  environ: Optional[MutableMapping[str, str]] = None,
  root: str = '/',
  platform: str = sys.platform,
) -> bool:
  """Sets JAX_PLATFORMS=cpu unless the user chose platforms, the system is
  not Linux, or an accelerator's device node exists; True if it did.

  Call it before JAX starts its back ends (before the first computation or
  `jax.devices()`); JAX may be imported already: its config is updated too.

  Args:
    environ: the environment to read and update; None: os.environ.
    root: the file system root to look for device nodes under.
    platform: `sys.platform`; only Linux is decided (elsewhere, e.g. macOS
      with Metal, accelerators have no such nodes).
  """
  environ = os.environ if environ is None else environ
  if _platforms_chosen(environ) or not platform.startswith('linux'):
    return False
  if accelerator_nodes(root):
    return False
  environ['JAX_PLATFORMS'] = 'cpu'
  if environ is os.environ and 'jax' in sys.modules:
    sys.modules['jax'].config.update('jax_platforms', 'cpu')
  return True


def _platforms_chosen(environ: Mapping[str, str]) -> bool:
  """Whether JAX_PLATFORMS or, for os.environ with JAX imported, jax.config
  names platforms."""
  if environ.get('JAX_PLATFORMS'):
    return True
  jax = sys.modules.get('jax') if environ is os.environ else None
  return bool(jax is not None and jax.config.jax_platforms)
