"""Noticing a lost peer within --heartbeat_timeout, and stopping cleanly.

JAX's distributed runtime already tracks its tasks' heartbeats, but when it
finds one missing it aborts every other process (status 134, a page of C++
traces), and the callback that would replace the abort cannot be used from
Python in this jaxlib. So the runtime is given a longer timeout
(`runtime_heartbeat_timeout`) as a backstop, and this monitor, built on the
runtime's own key-value store, reacts first:

* every `interval` seconds a thread writes this process's heartbeat counter
  and reads every peer's, and the failures that peers announced;
* a second thread (so that a blocked call cannot hide a silent coordinator)
  judges: a peer whose counter has not moved for `timeout` seconds, a
  coordinator that has not answered for as long, or a peer that announced a
  failure, ends this process through `failures.fail`.

At the end of a run (atexit) the monitor stops its threads and writes a last
heartbeat saying it finished, so that peers still at work do not take its
silence for a failure. Its threads must not be inside a runtime call when
Python shuts down: such a thread is unwound through the runtime's C++ frames,
which aborts the process (status 134) after a run that went well.
"""

import atexit
import threading
import time
from typing import Optional

from absl import logging

from sharp_unet_jax.compilation import kv_store
from sharp_unet_jax.training import failures

_HEARTBEAT_KEY = 'sharp_unet_jax/heartbeat/'
# Extra seconds JAX's own runtime waits past --heartbeat_timeout before it
# aborts: long enough for the monitor to act first on a loaded machine.
_RUNTIME_MARGIN_S = 30
# The phase of a process's last heartbeat once it has finished its run.
FINISHED = 'finished'


def runtime_heartbeat_timeout(timeout: float) -> int:
  """The heartbeat timeout handed to `jax.distributed.initialize`: 2T + 30 s.

  JAX's runtime may declare a task dead from about 3/4 of its timeout on, so
  twice ours plus a margin leaves the first word to this monitor.
  """
  return int(2 * timeout + _RUNTIME_MARGIN_S)


class PeerMonitor:
  """Watches the other processes' heartbeats; see the module docstring."""

  def __init__(self, timeout: float, interval: Optional[float] = None):
    self.timeout = float(timeout)
    self.interval = interval or min(5.0, max(0.5, self.timeout / 10))
    self._index = failures.context.process_index
    self._count = failures.context.process_count
    now = time.monotonic()
    self._beats = {}
    self.peer_states: dict[int, tuple[str, str]] = {}  # peer: (step, phase)
    self._last_seen = {p: now for p in range(self._count) if p != self._index}
    self._last_answer = now
    self._last_tick = now
    self._announced: dict[int, str] = {}
    self._stop = threading.Event()
    self._threads: list[threading.Thread] = []
    self._counter = 0

  def start(self) -> 'PeerMonitor':
    for target, name in ((self._exchange, 'heartbeat'), (self._judge, 'peer-judge')):
      thread = threading.Thread(target=target, name=name, daemon=True)
      thread.start()
      self._threads.append(thread)
    logging.info(
      'Peer monitor: heartbeat every %.1f s, a peer silent for %g s is lost.',
      self.interval,
      self.timeout,
    )
    return self

  def stop(self) -> bool:
    """Stops the threads; the heartbeat thread's last beat says it finished.

    Returns:
      Whether both threads ended within two intervals plus 10 s (for a
      runtime call under way).
    """
    self._stop.set()
    deadline = time.monotonic() + 2 * self.interval + 10
    for thread in self._threads:
      thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread in self._threads)

  def _beat(self, kv, phase: str) -> None:
    self._counter += 1
    beat = f'{self._counter} {failures.context.step} {phase}'
    kv.key_value_set(f'{_HEARTBEAT_KEY}{self._index}', beat, allow_overwrite=True)

  def _exchange(self) -> None:
    """Writes our heartbeat, reads the peers' and their announced failures."""
    kv = kv_store.client()
    while not self._stop.is_set():
      try:
        self._beat(kv, failures.context.phase)
        beats = kv.key_value_dir_get(_HEARTBEAT_KEY)
        announced = failures.peer_failures(kv)
      except Exception:  # noqa: BLE001  (the judge sees the silence)
        self._stop.wait(self.interval)
        continue
      now = time.monotonic()
      self._last_answer = now
      for key, value in beats:
        peer = int(key.rsplit('/', 1)[-1])
        if peer != self._index and self._beats.get(peer) != value:
          self._beats[peer] = value
          self._last_seen[peer] = now
          _, step, phase = value.split(' ', 2)
          self.peer_states[peer] = (step, phase)
      self._announced = {p: v for p, v in announced.items() if p != self._index}
      self._stop.wait(self.interval)
    try:
      self._beat(kv, FINISHED)
    except Exception:  # noqa: BLE001  (a peer then sees silence, as before)
      pass

  def _judge(self) -> None:
    while not self._stop.wait(self.interval):
      verdict = self.verdict(time.monotonic())
      if verdict:
        failures.fail(verdict, announce=False)

  def verdict(self, now: float) -> Optional[str]:
    """Why this process must stop, or None while every peer is there."""
    paused = now - self._last_tick
    self._last_tick = now
    checkpoint = failures.last_checkpoint_sentence()
    tail = f'{checkpoint} {failures.relaunch()}'
    if paused > self.timeout:
      return (
        f'{failures.process_name(self._index)} was paused for {paused:.0f} s '
        f'(stopped or frozen){failures.where()} and lost its peers. {tail}'
      )
    if self._announced:
      peer, line = min(self._announced.items())
      return (
        f'{failures.process_name(peer)} failed, so {failures.process_name(self._index)}'
        f' stopped{failures.where()}. It said: {line}'
      )
    if self._index != 0 and now - self._last_answer > self.timeout:
      return (
        f'{failures.process_name(0)} (the coordinator) stopped responding'
        f'{failures.where()} (no answer for {self.timeout:g} s). {tail}'
      )
    for peer, seen in sorted(self._last_seen.items()):
      finished = self.peer_states.get(peer, ('', ''))[1] == FINISHED
      if now - seen > self.timeout and not finished:
        return (
          f'{failures.process_name(peer)} stopped responding{failures.where()} '
          f'(no heartbeat for {self.timeout:g} s). {tail}'
        )
    return None


_monitor: Optional[PeerMonitor] = None


def start(timeout: float) -> None:
  """Starts the monitor of this multi-process run (after jax.distributed)."""
  global _monitor
  import jax  # noqa: PLC0415

  failures.context.process_index = jax.process_index()
  failures.context.process_count = jax.process_count()
  failures.tell_parent('process', jax.process_index())
  failures.tell_parent('count', jax.process_count())
  if jax.process_count() > 1 and _monitor is None:
    _monitor = PeerMonitor(timeout).start()
    # Registered after JAX's exit handler (which shuts jax.distributed down),
    # so it runs first.
    atexit.register(_monitor.stop)


def peer_states() -> dict[int, tuple[str, str]]:
  """{peer: (step, phase)} from the latest heartbeats ({} on one process)."""
  return dict(_monitor.peer_states) if _monitor is not None else {}


def await_verdict() -> None:
  """After an error in a multi-process run, gives the monitor time to blame a peer.

  An error in a collective (gloo's 'Connection reset by peer') often comes
  first when a peer dies; the monitor then ends the process, within the
  heartbeat timeout, with the line that names the peer. Returns when it
  finds every peer alive, or at once in a one-process run.
  """
  if _monitor is None:
    return
  time.sleep(_monitor.timeout + 3 * _monitor.interval)
