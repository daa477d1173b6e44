"""Measuring tools of the benchmark programs: wall time of compiled calls,
timed in alternation so that load from other processes hits all alike, the
process's memory, XLA's FLOP count and a matmul peak to compare with."""

import os
import resource
import statistics
import sys
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

# The one convention of every ours-vs-peer ratio this project prints, stores
# or tabulates (peer_benchmark, aot --peer, device_check, docs).
TIME_RATIO = 'time ours/peer, lower is better'


def time_ratio(ours, peer) -> Optional[float]:
  """Ours' time over the peer's (TIME_RATIO); None if either is missing."""
  if not ours or not peer:
    return None
  return ours / peer


def current_rss_mb() -> float:
  """Resident memory of this process now, in MiB."""
  with open('/proc/self/statm') as f:
    pages = int(f.read().split()[1])
  return pages * os.sysconf('SC_PAGE_SIZE') / 2**20


def peak_rss_mb() -> float:
  """Peak resident memory of this process so far, in MiB (Linux: KiB units)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cost_flops(compiled) -> float:
  """FLOPs of one call of a compiled computation, by XLA's cost analysis."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', float('nan')))


def block(tree) -> None:
  """Waits for every array of `tree`, in one batched wait.

  A wait per leaf costs host time per leaf: 61 us for a train step's 58
  outputs on this project's CPU VM, against 8 us batched. A timed step that
  returns many arrays would be charged that against a peer that returns one.
  """
  jax.block_until_ready(tree)


def time_calls(fn: Callable[[], Any], steps: int, log_every: int = 0) -> list[float]:
  """Wall milliseconds of `steps` calls of fn, each waited for.

  With `log_every` > 0, logs the step's time and the resident memory every
  `log_every` calls, so a long memory check shows its course while it runs.
  """
  times = []
  for i in range(1, steps + 1):
    start = time.perf_counter()
    block(fn())
    times.append((time.perf_counter() - start) * 1e3)
    if log_every and i % log_every == 0:
      print(
        f'step {i}/{steps}: {times[-1]:.0f} ms, rss {current_rss_mb():.0f} MB',
        file=sys.stderr,
        flush=True,
      )
  return times


def interleaved_times(step_a, step_b, steps: int, rounds: int, warmup: int = 2):
  """Alternates `rounds` rounds of `steps` timed calls of step_a, then step_b.

  Interleaving exposes both to the same machine load, so their ratio is
  meaningful on a shared host. Returns the two lists of milliseconds.
  """
  for _ in range(warmup):
    block(step_a())
    block(step_b())
  times_a, times_b = [], []
  for _ in range(rounds):
    times_a += time_calls(step_a, steps)
    times_b += time_calls(step_b, steps)
  return times_a, times_b


# Calls queued_ms issues at most: below the runtime's limit of executions in
# flight, so that issuing does not wait for the device.
MAX_QUEUED_CALLS = 30


def queued_ms(fn: Callable[[], Any], calls: int) -> tuple[float, float]:
  """Milliseconds per call of `calls` calls of fn issued back to back, then
  one wait: (issue, total).

  `issue` is the host's time to issue a call, the wait excluded; `total`
  includes the wait for the last. A step whose issue time is close to its
  total is bound by the host (its launches), not by the device. The
  runtime lets the host run only so far ahead of the device (about 32
  executions in XLA's client), after which issuing waits too: keep `calls`
  below that.
  """
  if not 0 < calls <= MAX_QUEUED_CALLS:
    raise ValueError(f'calls={calls}: give 1 to {MAX_QUEUED_CALLS}.')
  block(fn())
  start = time.perf_counter()
  for _ in range(calls):
    out = fn()
  issued = time.perf_counter()
  block(out)
  done = time.perf_counter()
  return (issued - start) / calls * 1e3, (done - start) / calls * 1e3


def round_ratios(times_a, times_b, steps: int) -> list[float]:
  """Per round, median time of b over median time of a (a's speed-up over b)."""
  return [
    statistics.median(times_b[i : i + steps])
    / statistics.median(times_a[i : i + steps])
    for i in range(0, len(times_a), steps)
  ]


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
  """GFLOP/s of a jitted size x size float32 matmul: the best of `repeats`."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  block(matmul(a, b))
  best = min(time_calls(lambda: matmul(a, b), repeats))
  return 2 * size**3 / (best / 1e3) / 1e9


def alternating_medians(
  calls: dict[str, Callable[[], Any]], repeats: int, steps: int = 1
) -> dict[str, float]:
  """Median seconds per call of each of `calls`, timed in alternation.

  Each is called once first (compilation), then `repeats` rounds call each in
  turn `steps` times, waiting only for the last call of a round: seconds per
  call at full throughput, not one call's latency.
  """
  for fn in calls.values():
    block(fn())
  seconds = {name: [] for name in calls}
  for _ in range(repeats):
    for name, fn in calls.items():
      begin = time.perf_counter()
      for _ in range(steps):
        out = fn()
      block(out)
      seconds[name].append((time.perf_counter() - begin) / steps)
  return {name: statistics.median(values) for name, values in seconds.items()}


def define_round_flags(steps: int, repeats: int) -> None:
  """The flags of a program timing a training config in alternating rounds.

  --config (required), --steps and --repeats, as `alternating_medians` takes
  them.
  """
  from absl import flags  # noqa: PLC0415
  from ml_collections import config_flags  # noqa: PLC0415

  config_flags.DEFINE_config_file('config', None, 'Training config file.')
  flags.DEFINE_integer('steps', steps, 'Timed steps per round.')
  flags.DEFINE_integer('repeats', repeats, 'Alternating timing rounds.')
  flags.mark_flags_as_required(['config'])
