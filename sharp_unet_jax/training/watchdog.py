"""The hang watchdog: a step, evaluation or checkpoint write that stalls ends the run.

A host can hang while its heartbeat thread runs on (a stuck input thread, a
deadlock, a peer stuck in a collective, a write to a stalled file system), so
the peer monitor never sees it. The train loop reports progress here; a
thread checks that progress keeps coming. When the current phase makes none
for `timeout` seconds, the watchdog writes every Python thread's stack to
WORKDIR/hang-<process>.txt and ends the process through `failures.fail`,
which tells the peers, so the whole job stops and can be relaunched.

A phase is timed only once it has completed before (`warmup` times for train
steps), so compilation never counts. The default timeout is the larger of
`floor` seconds and `factor` x the median of the recent train steps.
"""

import collections
import contextlib
import faulthandler
import os
import statistics
import threading
import time
from typing import Optional

from absl import logging

from sharp_unet_jax.errors import UserError
from sharp_unet_jax.training import failures, liveness

TRAIN = 'train step'
INPUT = 'input'  # waiting for the next batch: the input thread's work
FLOOR_S = 300.0
FACTOR = 10.0


class Watchdog:
  """See the module docstring. Thread-safe enough: plain attribute writes."""

  def __init__(
    self,
    workdir: str,
    timeout: Optional[float] = None,
    floor: float = FLOOR_S,
    factor: float = FACTOR,
    warmup: int = 2,
  ):
    self.workdir = workdir
    self.fixed_timeout = timeout
    self.floor, self.factor, self.warmup = floor, factor, warmup
    self._phase = TRAIN
    failures.context.phase = TRAIN
    self._completed = collections.Counter()
    self._last_progress = time.monotonic()
    self._last_step_end: Optional[float] = None
    self._step_times = collections.deque(maxlen=100)
    self._stop = threading.Event()

  def start(self) -> 'Watchdog':
    threading.Thread(target=self._run, name='hang-watchdog', daemon=True).start()
    return self

  def stop(self) -> None:
    self._stop.set()

  def timeout(self) -> float:
    """The current timeout: the fixed one, or the floor / median-step rule."""
    if self.fixed_timeout:
      return self.fixed_timeout
    median = statistics.median(self._step_times) if self._step_times else 0.0
    return max(self.floor, self.factor * median)

  def step_done(self, step: int) -> None:
    """A train step was dispatched and its batch taken: progress."""
    now = time.monotonic()
    if self._last_step_end is not None and self._completed[TRAIN] >= self.warmup:
      self._step_times.append(now - self._last_step_end)
    self._last_step_end = now
    self._completed[TRAIN] += 1
    self._last_progress = now

  def progress(self) -> None:
    """Work inside the current phase moved on (e.g. one eval batch)."""
    self._last_progress = time.monotonic()

  @contextlib.contextmanager
  def phase(self, name: str):
    """Times the enclosed block as `name`, then goes back to train steps."""
    self._phase, self._last_progress = name, time.monotonic()
    failures.context.phase = name
    try:
      yield
    finally:
      self._completed[name] += 1
      self._phase, self._last_progress = TRAIN, time.monotonic()
      failures.context.phase = TRAIN
      if name != INPUT:
        self._last_step_end = None  # the next step's time excludes this phase

  def _armed(self) -> bool:
    needed = self.warmup if self._phase in (TRAIN, INPUT) else 1
    return self._completed[self._phase] >= needed

  def _run(self) -> None:
    while not self._stop.wait(min(5.0, max(0.2, self.timeout() / 20))):
      stalled = time.monotonic() - self._last_progress
      if self._armed() and stalled > self.timeout():
        self._expire(stalled)

  def _expire(self, stalled: float) -> None:
    index = failures.context.process_index
    path = os.path.join(self.workdir, f'hang-{index}.txt')
    try:
      with open(path, 'w') as f:
        f.write(f'No progress in the {self._phase} for {stalled:.0f} s.\n')
        f.flush()
        faulthandler.dump_traceback(f, all_threads=True)
    except OSError as e:
      path = f'(could not be written: {e})'
    failures.fail(
      f'{_who_hung(index, self._phase)}{failures.where()}: no progress for '
      f"{stalled:.0f} s (timeout {self.timeout():.0f} s; every thread's stack of "
      f'this process is in {path}){_peers_sentence()}. '
      f'{failures.last_checkpoint_sentence()} {failures.relaunch()}'
    )


def _who_hung(index: int, phase: str) -> str:
  """'process i of n hung in its <phase>', or the peer stuck on its input.

  Peers wait for a hung process inside collectives, so every process stalls;
  one waiting for its own input, while this one is not, is the likely cause.
  """
  waiting_for_input = [
    peer for peer, (_, p) in liveness.peer_states().items() if p == INPUT
  ]
  if phase != INPUT and waiting_for_input:
    culprit = failures.process_name(waiting_for_input[0])
    return (
      f'{culprit} hung waiting for its input; {failures.process_name(index)} '
      f'waited for it in its {phase}'
    )
  return f'{failures.process_name(index)} hung in its {phase}'


def _peers_sentence() -> str:
  states = liveness.peer_states()
  if not states:
    return ''
  parts = [
    f'{failures.process_name(peer)} at step {step} in its {phase}'
    for peer, (step, phase) in sorted(states.items())
  ]
  return '; last heard: ' + ', '.join(parts)


OFF = 'off'


def parse_timeout(text: str):
  """--step_timeout: 'auto' -> None, 'off' -> OFF, else positive seconds.

  Raises:
    UserError: for anything else.
  """
  text = text.strip().lower()
  if text in ('auto', OFF):
    return None if text == 'auto' else OFF
  try:
    seconds = float(text)
  except ValueError:
    seconds = -1.0
  if seconds <= 0:
    raise UserError(
      f"--step_timeout must be 'auto', 'off' or positive seconds, got {text!r}."
    )
  return seconds


_active: Optional[Watchdog] = None


def start(workdir: str, timeout: Optional[float]) -> Watchdog:
  """Starts the process's watchdog (timeout None: the automatic rule)."""
  global _active
  if _active is not None:
    _active.stop()
  _active = Watchdog(workdir, timeout).start()
  rule = (
    f'{timeout:g} s' if timeout else f'max({FLOOR_S:g} s, {FACTOR:g} x median step)'
  )
  logging.info(
    'Hang watchdog: a stalled step, evaluation or checkpoint after %s.', rule
  )
  return _active


def stop() -> None:
  global _active
  if _active is not None:
    _active.stop()
    _active = None


def step_done(step: int) -> None:
  """Reports a finished train step to the active watchdog (if any)."""
  failures.set_step(step)
  if _active is not None:
    _active.step_done(step)


def progress() -> None:
  if _active is not None:
    _active.progress()


def waiting_for_input():
  """Context manager for the wait on the next batch (INPUT phase)."""
  return phase(INPUT)


def phase(name: str):
  """Context manager timing `name` (a no-op without an active watchdog)."""
  return _active.phase(name) if _active is not None else contextlib.nullcontext()
