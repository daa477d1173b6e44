"""Moves the next batches to the devices while the current step runs.

A background thread takes host batches (dicts of per-process numpy arrays)
from an iterator, makes them global arrays with
`jax.make_array_from_process_local_data` and puts them in a bounded queue.
Host memory then holds at most `depth` batches ahead of the step (plus the one
being read), and the step never waits for a transfer that could have happened
during the previous step. An exception in the thread is raised again, with its
message, in the thread that takes the batches.
"""

import queue
import threading
from typing import Iterable, Iterator

from sharp_unet_jax import input_pipeline

_END = object()


class _Failure:
  def __init__(self, error: BaseException):
    self.error = error


class DevicePrefetcher:
  """Iterates over global batches, `depth` of them prepared in advance.

  Use as a context manager (or call `close()`), so that the thread stops when
  the loop ends early:

    with DevicePrefetcher(host_batches, sharding) as batches:
      for batch in batches:
        ...
  """

  def __init__(self, host_batches: Iterable[dict], sharding, depth: int = 2):
    self._source = iter(host_batches)
    self._sharding = sharding
    self._queue = queue.Queue(maxsize=max(1, int(depth)))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._fill, name='prefetch', daemon=True)
    self._thread.start()

  def _put(self, item) -> bool:
    """Puts `item` unless asked to stop; returns whether it was put."""
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _fill(self) -> None:
    try:
      for local in self._source:
        if self._stop.is_set():
          return
        batch = input_pipeline.make_global_batch(local, self._sharding)
        if not self._put(batch):
          return
      self._put(_END)
    except BaseException as e:  # noqa: BLE001  (handed to the consumer)
      self._put(_Failure(e))

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    item = self._queue.get()
    if item is _END:
      self._queue.put(_END)  # later calls end too
      raise StopIteration
    if isinstance(item, _Failure):
      self._queue.put(item)
      raise item.error
    return item

  def close(self) -> None:
    """Stops the thread and drops the batches it prepared."""
    self._stop.set()
    while self._thread.is_alive():
      try:
        self._queue.get(timeout=0.1)
      except queue.Empty:
        pass
    self._thread.join()

  def __enter__(self) -> 'DevicePrefetcher':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
