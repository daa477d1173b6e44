"""Stopping cleanly on SIGTERM, the signal schedulers send before preempting.

On one process, a SIGTERM handler raises a flag that the train loop checks
after every step. On several processes, JAX's distributed runtime already
listens for the signal, and `reached_preemption_sync_point` makes every
process agree on the same step to stop at.
"""

import signal
import threading

from absl import logging
import jax
from jax.experimental import multihost_utils


class PreemptionWatcher:
  """Tells the train loop when to save and stop. Use as a context manager."""

  def __init__(self):
    self._requested = False
    self._previous = None

  def __enter__(self):
    single = jax.process_count() == 1
    if single and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint after this step.')
    self._requested = True

  def should_stop(self, step: int) -> bool:
    """True once a preemption was signalled (every process agrees on `step`)."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested
