"""The largest batch whose compiled program fits a memory budget.

A search over per-device batch sizes that knows nothing of models: it is
given `measure(batch)`, which compiles the program at that batch and returns
the compiler's peak bytes per device (None when the compiler refused it, an
out-of-memory refusal included), and finds the largest batch whose peak is
within the budget, compiling as few candidates as it can:

1. Grow from the start batch (the config's own) while candidates fit: at
   least doubling, and at most 32x. After the first candidate the step is to
   the batch that fills the budget if the peak grows in proportion to the
   batch (an underestimate, since the parameters and optimiser state do not
   grow); after that, to one past the batch at which a straight line through
   the last two peaks meets the budget. Stop at the first candidate over the
   budget.
2. Bisect the bracket (largest fit, smallest misfit) down to neighbours. The
   split point is the straight-line estimate between the bracket's peaks
   (regula falsi); after two steps that moved the same end, it is the
   midpoint, so a peak that is far from linear in the batch still costs no
   more than a few times plain bisection.

It assumes that peak memory does not fall as the batch grows; a compiler
whose peak does (rematerialisation) can make the answer smaller than the
true largest fit, never larger than one that fits.
"""

import dataclasses
import math
from typing import Callable, Optional

GROWTH = (2, 32)  # least and most factor of one growth step


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One compiled batch.

  Attributes:
    batch: the per-device batch.
    peak_bytes: the compiler's peak bytes per device; None if it refused.
    fits: whether the peak is within the budget.
    details: whatever `measure` returned besides the peak.
  """

  batch: int
  peak_bytes: Optional[int]
  fits: bool
  details: dict


@dataclasses.dataclass(frozen=True)
class Result:
  """The outcome of a search.

  Attributes:
    best: the largest candidate that fits; None if none did.
    first_misfit: the smallest candidate over the budget; None if none was.
    candidates: every candidate, in the order compiled.
    capped: True when the search stopped at `limit` with room to spare.
  """

  best: Optional[Candidate]
  first_misfit: Optional[Candidate]
  candidates: list
  capped: bool


def _line(a: Candidate, b: Candidate, budget: int) -> Optional[float]:
  """The batch at which the straight line through a and b meets the budget."""
  if a.peak_bytes is None or b.peak_bytes is None or b.peak_bytes <= a.peak_bytes:
    return None
  slope = (b.peak_bytes - a.peak_bytes) / (b.batch - a.batch)
  return a.batch + (budget - a.peak_bytes) / slope


def _grow(previous: Optional[Candidate], last: Candidate, budget: int) -> int:
  low, high = GROWTH[0] * last.batch, GROWTH[1] * last.batch
  if previous is None:
    # Peak in proportion to the batch: an underestimate of the fitting batch
    # when part of the peak (parameters, optimiser state) does not grow.
    estimate = last.batch * budget / last.peak_bytes if last.peak_bytes else None
  else:
    estimate = _line(previous, last, budget)
    estimate = None if estimate is None else estimate + 1
  if estimate is None:
    return low
  return int(min(max(math.floor(estimate), low), high))


def _split(lo: Optional[Candidate], hi: Candidate, budget: int, bisect: bool) -> int:
  lo_batch = lo.batch if lo else 0
  estimate = None if bisect or lo is None else _line(lo, hi, budget)
  if estimate is None:
    return (lo_batch + hi.batch) // 2
  return int(min(max(math.floor(estimate), lo_batch + 1), hi.batch - 1))


def steps_left(lo: int, hi: Optional[int], limit: int) -> int:
  """At most how many more candidates a search from bracket (lo, hi) needs."""
  if hi is None:  # still growing: doublings to the limit, then a bracket
    growth = max(0, math.ceil(math.log2(limit / max(lo, 1))))
    return growth + 3 * math.ceil(math.log2(max(lo, 2)))
  return 3 * math.ceil(math.log2(max(hi - lo, 1)))


def search(
  measure: Callable[[int], dict],
  budget: int,
  start: int,
  limit: int,
  on_candidate: Optional[Callable[[Candidate, int], None]] = None,
) -> Result:
  """Finds the largest per-device batch in [1, limit] whose peak fits.

  Args:
    measure: batch -> {'peak_bytes': int or None, ...}, by compiling.
    budget: the most peak bytes per device a batch may need.
    start: the batch to try first (clipped to [1, limit]).
    limit: the largest batch to try.
    on_candidate: called with (candidate, at most how many more) after each.

  Returns:
    The best candidate, the smallest misfit, and all candidates.
  """
  tried, lo, hi, moves = [], None, None, []

  def probe(batch: int) -> Candidate:
    details = dict(measure(batch))
    peak = details.pop('peak_bytes', None)
    candidate = Candidate(batch, peak, peak is not None and peak <= budget, details)
    tried.append(candidate)
    if on_candidate is not None:
      lo_batch = candidate.batch if candidate.fits else (lo.batch if lo else 0)
      if candidate.fits:
        hi_batch = hi.batch if hi else None
      else:
        hi_batch = candidate.batch
      on_candidate(candidate, steps_left(lo_batch, hi_batch, limit))
    return candidate

  batch = min(max(start, 1), limit)
  while hi is None:  # grow
    candidate = probe(batch)
    if not candidate.fits:
      hi = candidate
    elif batch >= limit:
      return Result(candidate, None, tried, capped=True)
    else:
      lo, previous = candidate, lo
      batch = min(_grow(previous, lo, budget), limit)
  while hi.batch - (lo.batch if lo else 0) > 1:  # bisect
    bisect = len(moves) >= 2 and moves[-1] == moves[-2]
    candidate = probe(_split(lo, hi, budget, bisect))
    moves.append(candidate.fits)
    if candidate.fits:
      lo = candidate
    else:
      hi = candidate
  return Result(lo, hi, tried, capped=False)
