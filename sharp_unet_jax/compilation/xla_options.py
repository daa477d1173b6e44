"""XLA compiler options set per compiled function (CPU programs only).

jaxlib 0.10's CPU compiler hands convolutions to YNNPACK fusions by default.
For U-Net's convolutions XLA's own convolution runtime is faster, above all for
the weight gradients at the large levels: with YNNPACK kept for dots only the
Sharp U-Net train step took 0.38x the time at 192x256 batch 16 and 0.88x at
128x128 batch 4, and inference 0.76-0.81x, with gradients as close to a float64
reference as before (docs/performance.md). YNNPACK's dot fusions may still take
in a convolution that feeds a dot in the forward pass. `compute_options('cpu')`
returns that setting for `jax.jit(..., compiler_options=...)`.

The options apply to the whole program, so they are chosen for the platform
the program is compiled for (the mesh's devices, meshes.platform), never the
host's: a CPU host compiling for GPU or TPU passes none.

A user who sets `--xla_cpu_experimental_ynn_fusion_type` in `XLA_FLAGS` keeps
their own choice.
"""

import os
from typing import Optional

import jax

YNN_FUSION_FLAG = 'xla_cpu_experimental_ynn_fusion_type'
# YNNPACK for dot (matmul) fusions only; convolutions go to XLA's runtime.
YNN_DOTS_ONLY = 'LIBRARY_FUSION_TYPE_DOT'


def compute_options(platform: str) -> Optional[dict]:
  """Options for train, eval and predict programs for `platform`; None off CPU.

  Args:
    platform: the platform compiled for, e.g. meshes.platform(mesh).
  """
  if platform != 'cpu':
    return None
  if YNN_FUSION_FLAG in os.environ.get('XLA_FLAGS', ''):
    return None
  return {YNN_FUSION_FLAG: YNN_DOTS_ONLY}


def init_options(platform: str) -> Optional[dict]:
  """Options for one-off initialisation for `platform`; None off CPU.

  Initialisation runs once; on CPU, optimising its many PRNG kernels takes far
  longer (about 10 s) than running them unoptimised. XLA's older elementwise
  emitters compile them faster still: configs/default.py's initialisation
  took 3.4-4.5 CPU-s with them against 6.4-6.7 without, with bitwise the
  same parameters.
  """
  if platform == 'cpu':
    return {'xla_backend_optimization_level': 0, 'xla_cpu_use_fusion_emitters': False}
  return None


def attached_platform() -> str:
  """The platform of the default device, where a jit without a mesh runs."""
  return jax.devices()[0].platform
