"""The device prefetcher: overlap with the step, errors, bounded, clean stop."""

import itertools
import threading
import time

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec
import numpy as np
import pytest

from sharp_unet_jax.data import prefetch


@pytest.fixture(scope='module')
def sharding():
  mesh = jax.make_mesh(
    (jax.device_count(),), ('data',), axis_types=(AxisType.Explicit,)
  )
  return NamedSharding(mesh, PartitionSpec('data'))


def host_batches(count, delay=0.0, pulled=None):
  for i in range(count):
    time.sleep(delay)
    if pulled is not None:
      pulled.append(i)
    yield {'x': np.full((jax.device_count(), 2), i, np.float32)}


def test_batches_arrive_in_order_as_global_arrays(sharding):
  with prefetch.DevicePrefetcher(host_batches(5), sharding) as batches:
    got = [batch['x'] for batch in batches]
  assert [int(np.asarray(x)[0, 0]) for x in got] == list(range(5))
  assert got[0].sharding == sharding


def test_next_batch_loads_while_the_step_runs(sharding):
  """Batch k + 1 is read while step k runs; checked by events, not a clock.

  The loader may read batch k + 1 only once step k has begun, and step k
  does not end until batch k + 1 has been read: a prefetcher that reads only
  when asked (between steps) gets stuck and times out. depth=1: with more,
  batch k + 1 is taken before step k, by design.
  """
  steps, wait_s = 5, 30.0
  step_began = [threading.Event() for _ in range(steps)]
  read = [threading.Event() for _ in range(steps)]

  def loader():
    for i, batch in enumerate(host_batches(steps)):
      if i and not step_began[i - 1].wait(wait_s):
        raise TimeoutError(f'batch {i} was wanted before step {i - 1} began')
      read[i].set()
      yield batch

  with prefetch.DevicePrefetcher(loader(), sharding, depth=1) as batches:
    for k, _ in enumerate(batches):
      step_began[k].set()  # the step
      if k + 1 < steps:
        assert read[k + 1].wait(wait_s), f'batch {k + 1} was not read during step {k}'
  assert all(event.is_set() for event in read)


def test_a_loader_error_reaches_the_consumer_with_its_message(sharding):
  def failing():
    yield from host_batches(2)
    raise ValueError('example 7 is broken')

  with prefetch.DevicePrefetcher(failing(), sharding) as batches:
    assert next(batches) and next(batches)
    with pytest.raises(ValueError, match='example 7 is broken'):
      next(batches)


def test_reads_at_most_depth_ahead_and_stops_on_close(sharding):
  pulled = []
  endless = host_batches(10**9, pulled=pulled)
  fetcher = prefetch.DevicePrefetcher(endless, sharding, depth=2)
  next(fetcher)
  time.sleep(0.3)
  # Taken, depth - 1 on the devices, depth queued, one waiting to be queued.
  assert len(pulled) <= 1 + (2 - 1) + 2 + 1
  fetcher.close()
  assert not fetcher._thread.is_alive()
  count = len(pulled)
  time.sleep(0.1)
  assert len(pulled) == count
  assert list(itertools.islice(pulled, 3)) == [0, 1, 2]
