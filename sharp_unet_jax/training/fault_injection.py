"""A switch for tests: make one process's input or step stall at a given step.

  SHARP_UNET_JAX_STALL=PROCESS:STEP[:input|step]

stalls process PROCESS for good when it reaches train step STEP: `input` in
the thread that reads the batches (the default), `step` in the train loop
itself. The hang watchdog must then end the run. Unset, it costs nothing.
"""

import os
import time
from typing import Optional

from absl import logging

ENV = 'SHARP_UNET_JAX_STALL'


def _requested() -> Optional[tuple[int, int, str]]:
  value = os.environ.get(ENV)
  if not value:
    return None
  parts = value.split(':')
  try:
    process, step = int(parts[0]), int(parts[1])
  except (IndexError, ValueError):
    raise ValueError(f'{ENV}={value!r}: expected PROCESS:STEP[:input|step]') from None
  where = parts[2] if len(parts) > 2 else 'input'
  if where not in ('input', 'step'):
    raise ValueError(f'{ENV}={value!r}: the place is input or step, not {where!r}')
  return process, step, where


def stall_if_requested(process: int, step: int, where: str) -> None:
  """Blocks forever when the environment asks for a stall here."""
  requested = _requested()
  if requested != (process, step, where):
    return
  logging.warning('%s: stalling process %d at step %d (%s).', ENV, process, step, where)
  while True:
    time.sleep(3600)
