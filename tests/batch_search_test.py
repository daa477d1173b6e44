"""The batch search: largest fit, neighbours at the edge, few compiles."""

import pytest

from sharp_unet_jax.compilation import batch_search


def linear(fixed: int, per_image: int, calls: list, quadratic: int = 0):
  """A fake compiler: peak = fixed + per_image * b (+ b^2 / quadratic)."""

  def measure(batch: int) -> dict:
    calls.append(batch)
    extra = batch * batch // quadratic if quadratic else 0
    return {'peak_bytes': fixed + per_image * batch + extra, 'compile_s': 1.0}

  return measure


@pytest.mark.parametrize(
  'fixed, per_image, quadratic, budget, start',
  [
    (100, 10, 0, 1000, 4),  # grows
    (100, 10, 50, 1000, 4),  # far from linear
    (0, 7, 0, 1000, 4),
    (100, 10, 0, 1000, 200),  # the start batch does not fit
    (50, 3, 0, 10_000, 1),
  ],
)
def test_finds_the_largest_batch_that_fits(fixed, per_image, quadratic, budget, start):
  calls = []
  measure = linear(fixed, per_image, calls, quadratic)
  result = batch_search.search(measure, budget, start, limit=4096)
  peak = lambda b: measure(b)['peak_bytes']  # noqa: E731
  best = result.best.batch
  assert peak(best) <= budget < peak(best + 1)
  assert result.first_misfit.batch == best + 1 and not result.capped
  # Once a candidate was over the budget, nothing larger was compiled.
  order = [c.batch for c in result.candidates]
  first_over = next(i for i, c in enumerate(result.candidates) if not c.fits)
  assert all(b < order[first_over] for b in order[first_over + 1 :])
  # Far fewer compiles than plain doubling and bisection would need.
  assert len(result.candidates) <= 8


def test_a_linear_peak_is_found_in_four_compiles():
  result = batch_search.search(linear(100, 10, []), 1000, 4, limit=4096)
  assert len(result.candidates) <= 4
  assert result.best.batch == 90


def test_stops_at_the_limit_and_says_so():
  result = batch_search.search(linear(1, 1, []), 10**9, 4, limit=100)
  assert result.capped and result.best.batch == 100
  assert max(c.batch for c in result.candidates) == 100


def test_nothing_fits_and_refusals_count_as_misfits():
  result = batch_search.search(linear(1000, 1, []), 500, 4, limit=64)
  assert result.best is None and result.first_misfit.batch == 1

  def refuses_above_5(batch):
    return {'peak_bytes': batch if batch <= 5 else None, 'error': 'OOM'}

  result = batch_search.search(refuses_above_5, 1000, 2, limit=64)
  assert result.best.batch == 5
  refused = [c for c in result.candidates if c.peak_bytes is None]
  assert refused and all(not c.fits and c.details['error'] == 'OOM' for c in refused)


def test_progress_gives_an_upper_bound_that_holds():
  seen = []
  result = batch_search.search(
    linear(100, 10, [], 50), 1000, 4, 4096, lambda c, left: seen.append(left)
  )
  # After candidate i, at most seen[i] more were needed.
  for i, left in enumerate(seen):
    assert len(result.candidates) - (i + 1) <= left


def test_a_jump_in_the_peak_costs_no_more_than_a_few_bisections():
  # A peak that jumps past the budget (as when a compiler changes its plan):
  # straight-line estimates creep up one batch at a time; bisection does not.
  def jumps(batch):
    return {'peak_bytes': batch if batch <= 500 else 10**6}

  result = batch_search.search(jumps, 1000, 4, limit=4096)
  assert result.best.batch == 500 and result.first_misfit.batch == 501
  assert len(result.candidates) <= 20
