"""Compiling one jitted function for abstract inputs, and its memory figures.

Shared by `aot` (training/aot_steps.py), the planner and predict's
`--tile_batch=auto`: the program is lowered and compiled, never run, and
XLA's memory analysis of it gives the bytes each device needs.
"""

import contextlib
import time
from typing import Any, Optional

import jax


def memory(compiled) -> dict[str, Optional[int]]:
  """Per-device bytes of XLA's memory analysis; peak = arguments + outputs
  - aliased (donated) + temporaries, the buffers live at once at most.
  All None where the backend gives no memory analysis."""
  try:
    stats = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError):
    stats = None
  if stats is None:
    return {'argument_bytes': None, 'output_bytes': None, 'temp_bytes': None}
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


@contextlib.contextmanager
def _no_persistent_cache():
  """Compile-only programs cannot be read back from JAX's persistent cache."""
  enabled = jax.config.jax_enable_compilation_cache
  jax.config.update('jax_enable_compilation_cache', False)
  try:
    yield
  finally:
    jax.config.update('jax_enable_compilation_cache', enabled)


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
