"""Reads the next batches while the current step runs, and sends them ahead.

Two stages, each bounded:

* A background thread takes host batches (dicts of per-process numpy arrays)
  from an iterator, so reading, decoding and resizing (in the input's worker
  threads) go on while the devices compute. It keeps at most `depth` batches
  in a queue.
* The consuming thread keeps `depth` batches already on the devices: taking
  one starts the transfer of the next (`jax.make_array_from_process_local_data`
  dispatches asynchronously), so a step's inputs are sent while the previous
  step runs. Arrays are made only in the consuming thread: in a multi-process
  run every process must dispatch its device work in the same order, which a
  second thread calling into JAX would not guarantee.

Host memory thus holds at most 2 * depth batches (plus one being read). An
exception in the thread is raised again, with its message, in the consumer.
"""

import collections
import queue
import threading
from typing import Iterable, Iterator

from sharp_unet_jax.data import input_pipeline

_END = object()


class _Failure:
  def __init__(self, error: BaseException):
    self.error = error


class DevicePrefetcher:
  """Iterates over global batches, prepared `depth` batches in advance.

  Use as a context manager (or call `close()`), so that the thread stops when
  the loop ends early:

    with DevicePrefetcher(host_batches, sharding) as batches:
      for batch in batches:
        ...
  """

  def __init__(self, host_batches: Iterable[dict], sharding, depth: int = 2):
    self._source = iter(host_batches)
    self._sharding = sharding
    self._depth = max(1, int(depth))
    self._queue = queue.Queue(maxsize=self._depth)
    self._on_devices = collections.deque()
    self._ended = False
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
        if not self._put(local):
          return
      self._put(_END)
    except BaseException as e:  # noqa: BLE001  (handed to the consumer)
      self._put(_Failure(e))

  def _send_next(self) -> None:
    """Starts moving the next host batch to the devices, if there is one."""
    item = self._queue.get()
    if item is _END:
      self._ended = True
    elif isinstance(item, _Failure):
      self._ended = True
      self._on_devices.append(item)
    else:
      self._on_devices.append(input_pipeline.make_global_batch(item, self._sharding))

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    # Batches beyond the one returned stay on their way to the devices.
    while not self._ended and len(self._on_devices) < self._depth:
      self._send_next()
    if not self._on_devices:
      raise StopIteration
    item = self._on_devices[0]
    if isinstance(item, _Failure):
      raise item.error  # and again on every later call
    return self._on_devices.popleft()

  def close(self) -> None:
    """Stops the thread and drops the batches it prepared."""
    self._stop.set()
    while self._thread.is_alive():
      try:
        self._queue.get(timeout=0.1)
      except queue.Empty:
        pass
    self._thread.join()
    self._on_devices.clear()

  def __enter__(self) -> 'DevicePrefetcher':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
