"""XLA compiler options set per compiled function (CPU only).

jaxlib 0.10's CPU compiler hands convolutions to YNNPACK fusions by default.
For U-Net's convolutions XLA's own convolution runtime is faster, above all for
the weight gradients at the large levels: with YNNPACK kept for dots only the
Sharp U-Net train step took 0.38x the time at 192x256 batch 16 and 0.88x at
128x128 batch 4, and inference 0.76-0.81x, with gradients as close to a float64
reference as before (docs/performance.md). YNNPACK's dot fusions may still take
in a convolution that feeds a dot in the forward pass. `compute_options()` returns that
setting for `jax.jit(..., compiler_options=...)`; GPU and TPU get nothing.

A user who sets `--xla_cpu_experimental_ynn_fusion_type` in `XLA_FLAGS` keeps
their own choice.
"""

import os
from typing import Optional

import jax

YNN_FUSION_FLAG = 'xla_cpu_experimental_ynn_fusion_type'
# YNNPACK for dot (matmul) fusions only; convolutions go to XLA's runtime.
YNN_DOTS_ONLY = 'LIBRARY_FUSION_TYPE_DOT'


def compute_options() -> Optional[dict]:
  """Options for the train, eval and predict steps on CPU; None elsewhere."""
  if jax.default_backend() != 'cpu':
    return None
  if YNN_FUSION_FLAG in os.environ.get('XLA_FLAGS', ''):
    return None
  return {YNN_FUSION_FLAG: YNN_DOTS_ONLY}


def init_options() -> Optional[dict]:
  """Options for one-off initialisation on CPU; None elsewhere.

  Initialisation runs once; on CPU, optimising its many PRNG kernels takes far
  longer (about 10 s) than running them unoptimised.
  """
  if jax.default_backend() == 'cpu':
    return {'xla_backend_optimization_level': 0}
  return None
