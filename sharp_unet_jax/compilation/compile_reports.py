"""Compiles jitted steps for a target and reports on the compiled programs.

A step is lowered with abstract inputs (shapes, dtypes and shardings; no
data) and compiled for the target's devices. Each compiled program is
summarised: compile time, XLA's memory analysis per device, FLOPs and bytes
accessed (on CPU and TPU from XLA's cost analysis of the optimised program,
with a roofline of the whole step from the chip's published peaks,
chips.py; on GPU, whose compiled programs report no cost analysis, from
each kernel of the optimised program, gpu_kernels.py, with a per-kernel
roofline), on TPU the bytes that move to and from HBM only (hbm_traffic.py),
and the collectives and grouped convolutions of the optimised HLO
(hlo_stats.py). All figures for TPU and GPU are the compiler's estimates,
not measurements; `estimate_errs` says which way each errs.

Which steps are compiled (the Trainer's, or the Keras peer's) is the
callers' business: training/aot_steps.py, benchmarks/keras_aot.py.
"""

import contextlib
import time
from typing import Any, Optional

import jax

from sharp_unet_jax.compilation import gpu_kernels, hbm_traffic, hlo_stats

MEMORY_FIELDS = ('argument_bytes', 'output_bytes', 'temp_bytes', 'peak_bytes')


def _cost(compiled) -> dict:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001  Some backends implement none.
    cost = None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return cost or {}


def memory(compiled) -> dict[str, Optional[int]]:
  """Per-device bytes of XLA's memory analysis; peak = arguments + outputs
  - aliased (donated) + temporaries, the buffers live at once at most. All
  None where the backend gives no memory analysis."""
  try:
    stats = compiled.memory_analysis()
  except Exception:  # noqa: BLE001  Some backends implement none.
    stats = None
  if stats is None:
    return dict.fromkeys(MEMORY_FIELDS)
  peak = (
    stats.argument_size_in_bytes
    + stats.output_size_in_bytes
    - stats.alias_size_in_bytes
    + stats.temp_size_in_bytes
  )
  return {
    'argument_bytes': int(stats.argument_size_in_bytes),
    'output_bytes': int(stats.output_size_in_bytes),
    'temp_bytes': int(stats.temp_size_in_bytes),
    'peak_bytes': int(peak),
  }


def roofline(report: dict, chip, dtype: str, images: int) -> dict:
  """Step time bound by compute or memory traffic, whichever is slower:
  max(FLOPs / peak FLOP/s, bytes / bandwidth) for the whole step."""
  flops, traffic = report.get('flops'), report.get('bytes_accessed')
  if chip is None or not flops:
    return {'est_step_ms': None, 'est_images_per_sec_per_device': None}
  seconds = max(flops / chip.peak_flops[dtype], (traffic or 0) / chip.bandwidth)
  return _estimate(seconds, images)


def _estimate(seconds: float, images: int) -> dict:
  return {
    'est_step_ms': seconds * 1e3,
    'est_images_per_sec_per_device': images / seconds if images else None,
  }


# Which way the TPU figures err (gpu_kernels.ERRORS for GPU programs).
TPU_ERRORS = {
  'flops': "XLA's count for the optimised program",
  'bytes_accessed': 'high: XLA counts operands in on-chip memory (VMEM) too; '
  'hbm_bytes_accessed counts those in HBM only',
  'est_step_ms': 'either: high where on-chip bytes are charged at HBM '
  'bandwidth, low as no step runs at the peaks',
}


def _gpu_cost(text: str, chip, dtype: str, images: int) -> dict:
  """Kernel count, FLOPs, bytes and estimate from the optimised GPU HLO."""
  found = gpu_kernels.estimate(text, chip.peak_flops[dtype], chip.bandwidth)
  report = {
    'cost_source': 'kernels of the optimised GPU program',
    'kernels': found['kernels'],
    'convolution_kernels': found['convolution_kernels'],
    'flops': found['flops'],
    'bytes_accessed': found['bytes_accessed'],
    'estimate_errs': dict(gpu_kernels.ERRORS),
  }
  report.update(_estimate(found['est_seconds'], images))
  return report


def _xla_cost(compiled, chip, dtype: str, images: int) -> dict:
  """FLOPs and bytes of XLA's cost analysis (CPU and TPU) and the roofline."""
  cost = _cost(compiled)
  report = {
    'cost_source': "XLA's cost analysis of the optimised program" if cost else None,
    'kernels': None,
    'flops': cost.get('flops'),
    'bytes_accessed': cost.get('bytes accessed'),
    'estimate_errs': dict(TPU_ERRORS) if chip is not None else None,
  }
  report.update(roofline(report, chip, dtype, images))
  return report


@contextlib.contextmanager
def _no_persistent_cache():
  """Compile-only programs cannot be read back from JAX's persistent cache.

  Turning the cache off is not enough once this process has compiled with
  it on (JAX decides whether the cache is used once per process): then each
  program would still be serialised and written, and a later compile of the
  same program would warn that it cannot read the entry back. An infinite
  minimum compile time keeps every program out of the cache.
  """
  enabled = jax.config.jax_enable_compilation_cache
  min_seconds = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update('jax_enable_compilation_cache', False)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', float('inf'))
  try:
    yield
  finally:
    jax.config.update('jax_enable_compilation_cache', enabled)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', min_seconds)


def compile_step(fn, args) -> tuple[Any, Any, float]:
  """(lowered, compiled, seconds); compiled is an error line if XLA refuses."""
  start = time.perf_counter()
  lowered = None
  try:
    lowered = fn.lower(*args)
    with _no_persistent_cache():
      compiled = lowered.compile()
  except Exception as e:  # noqa: BLE001  Any compiler error is the answer.
    message = ' '.join(str(e).split())[:300]
    return lowered, f'{type(e).__name__}: {message}', time.perf_counter() - start
  return lowered, compiled, time.perf_counter() - start


def summarize(compiled, target, dtype: str, images: int) -> dict:
  """The report of one compiled step (per device), computing in `dtype`."""
  report = memory(compiled)
  report['device_memory_bytes'] = target.chip.memory_bytes if target.chip else None
  text = compiled.as_text()
  if target.platform == 'gpu':
    report.update(_gpu_cost(text, target.chip, dtype, images))
  else:
    report.update(_xla_cost(compiled, target.chip, dtype, images))
  # HBM-only traffic needs the TPU's memory spaces (hbm_traffic.py).
  report['hbm_bytes_accessed'] = (
    hbm_traffic.traffic(text)['hbm_bytes'] if target.platform == 'tpu' else None
  )
  report['collectives'] = hlo_stats.collectives(text)
  report['grouped_convolutions'] = hlo_stats.grouped_convolutions(text)
  return report


def compile_steps(steps: dict, target, dtype: str, images: dict, on_step=None) -> dict:
  """Compiles each of `steps` ({name: (jitted fn, abstract args)}) for
  `target`; {name: report}. `dtype` is the computation dtype, `images` each
  step's images per device."""
  reports = {}
  for name, (fn, args) in steps.items():
    _, compiled, seconds = compile_step(fn, args)
    report = {'compiled': not isinstance(compiled, str), 'compile_s': round(seconds, 2)}
    if report['compiled']:
      report.update(summarize(compiled, target, dtype, images[name]))
    else:
      report['error'] = compiled
    reports[name] = report
    if on_step is not None:
      on_step(name, report)
  return reports
