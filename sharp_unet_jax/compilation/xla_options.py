"""XLA compiler options set per compiled function (CPU and GPU programs).

jaxlib 0.10's CPU compiler hands convolutions to YNNPACK fusions by default.
For U-Net's convolutions XLA's own convolution runtime is faster, above all for
the weight gradients at the large levels: with YNNPACK kept for dots only the
Sharp U-Net train step took 0.38x the time at 192x256 batch 16 and 0.88x at
128x128 batch 4, and inference 0.76-0.81x, with gradients as close to a float64
reference as before (docs/performance.md). YNNPACK's dot fusions may still take
in a convolution that feeds a dot in the forward pass. `compute_options('cpu')`
returns that setting for `jax.jit(..., compiler_options=...)`.

XLA:GPU combines all-reduces into one buffer up to a size
(`xla_gpu_all_reduce_combine_threshold_bytes`, 30 MiB by default). The
'gpu_cudnn' form sums its gradient as one flat buffer (network.py); combined
with the metrics' small sums, that buffer was copied into a larger one and
back out, 31 MB of traffic per step in configs/default.py's train step.
`compute_options('gpu')` keeps buffers from 1 MiB up out of the combining.

The options apply to the whole program, so they are chosen for the platform
the program is compiled for (the mesh's devices, meshes.platform), never the
host's: a CPU host compiling for TPU passes none.

A user who sets one of these flags in `XLA_FLAGS` keeps their own choice.
CPU options that the installed jaxlib's compiler does not know (it renames and
retires them between releases: jaxlib 0.11 has no
`xla_cpu_use_fusion_emitters`) are left out, so that the program compiles
with that jaxlib's defaults instead of failing.
"""

import functools
import os
from typing import Optional

import jax

YNN_FUSION_FLAG = 'xla_cpu_experimental_ynn_fusion_type'
# YNNPACK for dot (matmul) fusions only; convolutions go to XLA's runtime.
YNN_DOTS_ONLY = 'LIBRARY_FUSION_TYPE_DOT'
ALL_REDUCE_COMBINE_FLAG = 'xla_gpu_all_reduce_combine_threshold_bytes'
ALL_REDUCE_COMBINE_BYTES = 2**20
_COMPUTE_OPTIONS = {
  'cpu': {YNN_FUSION_FLAG: YNN_DOTS_ONLY},
  'gpu': {ALL_REDUCE_COMBINE_FLAG: ALL_REDUCE_COMBINE_BYTES},
}


def compute_options(platform: str) -> Optional[dict]:
  """Options for train, eval and predict programs for `platform`; None for
  other platforms than CPU and GPU.

  Args:
    platform: the platform compiled for, e.g. meshes.platform(mesh).
  """
  options = _COMPUTE_OPTIONS.get(platform)
  if options is None:
    return None
  user_flags = os.environ.get('XLA_FLAGS', '')
  if any(flag in user_flags for flag in options):
    return None
  if platform == 'cpu':
    return known_to_cpu_compiler(options)
  return dict(options)


def init_options(platform: str) -> Optional[dict]:
  """Options for one-off initialisation for `platform`; None off CPU.

  Initialisation runs once; on CPU, optimising its many PRNG kernels takes far
  longer (about 10 s) than running them unoptimised. XLA's older elementwise
  emitters compile them faster still: configs/default.py's initialisation
  took 3.4-4.5 CPU-s with them against 6.4-6.7 without, with bitwise the
  same parameters.
  """
  if platform == 'cpu':
    return known_to_cpu_compiler(
      {'xla_backend_optimization_level': 0, 'xla_cpu_use_fusion_emitters': False}
    )
  return None


def known_to_cpu_compiler(options: dict) -> dict:
  """The options of `options` that this jaxlib's CPU compiler accepts."""
  return {
    name: value for name, value in options.items() if _cpu_compiler_knows(name, value)
  }


@functools.cache
def _cpu_compiler_knows(name: str, value) -> bool:
  """Whether compiling a one-line program on CPU with the option succeeds
  (on the CPU device, also where the default device is a GPU or TPU)."""
  one = jax.device_put(1.0, jax.devices('cpu')[0])
  try:
    jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(one).compile()
  except jax.errors.JaxRuntimeError as error:
    if 'No such compile option' in str(error):
      return False
    raise
  return True


def attached_platform() -> str:
  """The platform of the default device, where a jit without a mesh runs."""
  return jax.devices()[0].platform
