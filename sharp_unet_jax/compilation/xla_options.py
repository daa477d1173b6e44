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

XLA:GPU records runs of kernels into CUDA graphs (command buffers), but by
default not convolutions, and only runs of at least 5 commands. U-Net's steps
alternate convolutions with one to three fused kernels, so most of them were
launched one by one: at configs/default.py's 64x64 the train step was bound by
the host's launches on one H200 (issuing a step took as long as running it).
`compute_options('gpu')` adds convolutions to XLA's default command types
(`command_buffer_types`; for jaxlib 0.10 and 0.12, whose defaults it lists).
Measured on one H200 (jax 0.11.2, batch 16, ours against ours, same process):
step time 0.97x (float32) and 0.60x (bfloat16) at 64x64 waited for step by
step, 0.73x and 0.58x with steps queued, 0.98-1.00x at 192x256, and the
parameters after a step equal to within 1.5e-8 (jaxlib 0.11.2, given jaxlib
0.10.2's list and convolutions by hand). XLA drops the convolution command on
a CUDA driver or runtime older than 12.3.

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
from importlib import metadata
import os
from typing import Optional

import jax

YNN_FUSION_FLAG = 'xla_cpu_experimental_ynn_fusion_type'
# YNNPACK for dot (matmul) fusions only; convolutions go to XLA's runtime.
YNN_DOTS_ONLY = 'LIBRARY_FUSION_TYPE_DOT'
ALL_REDUCE_COMBINE_FLAG = 'xla_gpu_all_reduce_combine_threshold_bytes'
ALL_REDUCE_COMBINE_BYTES = 2**20
COMMAND_BUFFER_FLAG = 'xla_gpu_enable_command_buffer'
_COMMAND_TYPES_0_10 = (
  'FUSION',
  'CUBLAS',
  'CUBLASLT',
  'CUDNN',
  'CUSTOM_CALL',
  'CONDITIONAL',
  'DYNAMIC_SLICE_FUSION',
)
# XLA:GPU's default command types, by jaxlib (major, minor) release; the
# option names the whole list, so it is given only for releases listed here,
# whose defaults tests/aot_test.py checks. Others keep XLA's own defaults.
DEFAULT_COMMAND_TYPES = {
  (0, 10): _COMMAND_TYPES_0_10,
  (0, 12): (*_COMMAND_TYPES_0_10, 'COLLECTIVES_KERNEL'),
}
_JAXLIB = tuple(int(part) for part in metadata.version('jaxlib').split('.')[:2])


def command_buffer_types(jaxlib: tuple = _JAXLIB) -> Optional[str]:
  """XLA:GPU's default command types of this jaxlib, and convolutions, as
  the option's value; None for a jaxlib whose defaults are not listed."""
  defaults = DEFAULT_COMMAND_TYPES.get(jaxlib)
  return None if defaults is None else ','.join((*defaults, 'CONVOLUTION'))


_GPU_OPTIONS = {
  ALL_REDUCE_COMBINE_FLAG: ALL_REDUCE_COMBINE_BYTES,
  COMMAND_BUFFER_FLAG: command_buffer_types(),
}
_COMPUTE_OPTIONS = {
  'cpu': {YNN_FUSION_FLAG: YNN_DOTS_ONLY},
  'gpu': {flag: value for flag, value in _GPU_OPTIONS.items() if value is not None},
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
  user_flags = _flag_names(os.environ.get('XLA_FLAGS', ''))
  options = {flag: value for flag, value in options.items() if flag not in user_flags}
  if platform == 'cpu':
    options = known_to_cpu_compiler(options)
  return options or None


def _flag_names(xla_flags: str) -> set:
  """The flag names of an XLA_FLAGS string ('--a=1 --b' -> {'a', 'b'})."""
  return {token.lstrip('-').split('=', 1)[0] for token in xla_flags.split()}


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
