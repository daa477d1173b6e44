"""Seed-level statistics against values worked out by hand on made-up tables."""

import itertools

import numpy as np
import pytest
from scipy import stats

from sharp_unet_jax.evaluation import statistics

# Made-up per-seed differences (Sharp U-Net - U-Net, Dice points), 4 seeds.
DIFFERENCES = [0.5, 1.0, 2.0, 4.5]


def test_seed_level_t_interval_by_hand():
  result = statistics.seed_level(DIFFERENCES, samples=2000)
  # mean = 8 / 4 = 2; deviations -1.5, -1, 0, 2.5; squares sum to 9.5;
  # s = sqrt(9.5 / 3) = 1.779513; sem = s / 2 = 0.889757;
  # t(0.975, df 3) = 3.182446 (tables); half-width = 2.831602.
  assert result['n'] == 4 and result['unit'] == 'seed'
  assert result['differences'] == DIFFERENCES
  assert result['mean'] == pytest.approx(2.0)
  assert result['std'] == pytest.approx(1.779513, abs=1e-6)
  assert result['ci95_t'] == pytest.approx([2.0 - 2.831602, 2.0 + 2.831602], abs=1e-5)
  # t = 2 / 0.889757 = 2.247806; two-sided p with 3 df = 0.1102 (tables).
  assert result['t_statistic'] == pytest.approx(2.247806, abs=1e-5)
  assert result['p_t'] == pytest.approx(0.1102, abs=1e-4)


def exact_bootstrap_percentiles(values):
  """Percentiles 2.5 and 97.5 of the mean over every resample, enumerated."""
  means = [np.mean(draw) for draw in itertools.product(values, repeat=len(values))]
  return np.percentile(means, [2.5, 97.5])


def test_seeded_bootstrap_matches_the_enumerated_distribution():
  # 4 ** 4 = 256 equally likely resamples: their means' 2.5 and 97.5
  # percentiles are the interval an infinite bootstrap gives.
  exact = exact_bootstrap_percentiles(DIFFERENCES)
  # By hand: the sorted means start 0.5 (1 way), 0.625 (4 ways), 0.75 (6
  # ways), so rank 0.025 * 255 = 6.4 is 0.75; they end 3.625 (4 ways: three
  # 4.5 and a 1.0), 3.875 (4 ways), 4.5 (1 way), so rank 248.6 is 3.625.
  assert exact == pytest.approx([0.75, 3.625])
  result = statistics.seed_level(DIFFERENCES, samples=20_000, seed=3)
  assert result['ci95_bootstrap'] == pytest.approx(exact, abs=0.1)
  again = statistics.seed_level(DIFFERENCES, samples=20_000, seed=3)
  assert again['ci95_bootstrap'] == result['ci95_bootstrap']  # seeded
  spread = np.arange(10.0) ** 1.5  # many distinct means: the seed shows
  assert statistics.bootstrap_interval(spread, 500, seed=1) != (
    statistics.bootstrap_interval(spread, 500, seed=2)
  )


def test_seeds_x_images_by_hand():
  # 2 seeds x 3 shared images. Mean 3; seed means 2, 4; image means 1, 1.5,
  # 6.5. MS_seed = 3 * (1 + 1) / 1 = 6; MS_image = 2 * (4 + 2.25 + 12.25) / 2
  # = 18.5; residuals d - seed mean - image mean + 3 are 0, .5, -.5 / 0, -.5,
  # .5, so MS_residual = 1 / 2 = 0.5. Variance of the mean (6 + 18.5 - 0.5) /
  # 6 = 4; Satterthwaite df = 24^2 / (6^2 / 1 + 18.5^2 / 2 + 0.5^2 / 2) =
  # 576 / 207.25 = 2.779; t(0.975, 2.779) = 3.3303 (between the tables'
  # 4.303 at 2 df and 3.182 at 3 df); half-width 2 x 3.3303.
  result = statistics.seeds_x_images([[0.0, 1.0, 5.0], [2.0, 2.0, 8.0]])
  assert result['mean'] == pytest.approx(3.0)
  assert result['df'] == pytest.approx(576 / 207.25)
  assert result['ci95'] == pytest.approx([3 - 6.66067, 3 + 6.66067], abs=1e-4)
  assert result['variance_components'] == pytest.approx(
    {'seed': 5.5 / 3, 'image': 9.0, 'residual': 0.5}
  )
  # Seed and image mean squares 0 < MS_residual = 4 (residuals +-1, 1 df):
  # both components are set to 0, variance 4 / 4 = 1, df 1, t = 12.7062.
  flat = statistics.seeds_x_images([[0.0, 2.0], [2.0, 0.0]])
  assert flat['variance_components'] == pytest.approx(
    {'seed': 0.0, 'image': 0.0, 'residual': 4.0}
  )
  assert flat['df'] == pytest.approx(1.0)
  assert flat['ci95'] == pytest.approx([1 - 12.7062, 1 + 12.7062], abs=1e-4)
  assert statistics.seeds_x_images([[1.0, 2.0, 3.0]]) is None  # one seed


def coverage(seed_sd, image_sd, rng, replications=4000, seeds=5, images=200):
  """Share of simulated crossed tables whose intervals hold the true mean 0.

  d[s, i] = a_s + b_i + e_si, a_s ~ N(0, seed_sd), b_i ~ N(0, image_sd)
  shared by every seed, e_si ~ N(0, 1).
  """
  tables = rng.normal(0.0, seed_sd, (replications, seeds, 1))
  tables = tables + rng.normal(0.0, image_sd, (replications, 1, images))
  tables += rng.standard_normal((replications, seeds, images))
  result = statistics.crossed_intervals(tables)
  seed_means = tables.mean(axis=2)
  low, high = stats.t.interval(
    0.95, seeds - 1, loc=seed_means.mean(axis=1), scale=stats.sem(seed_means, axis=1)
  )
  covered = (result['low'] <= 0) & (0 <= result['high'])
  return covered.mean(), ((low <= 0) & (0 <= high)).mean()


@pytest.mark.parametrize(
  'seed_sd, image_sd, name',
  [(1.0, 1.0, 'seeds dominate'), (0.05, 2.0, 'images dominate')],
)
def test_seeds_x_images_covers_95_percent_of_crossed_tables(seed_sd, image_sd, name):
  # 4,000 tables of 5 seeds x 200 images: the coverage estimate's standard
  # error is sqrt(.95 x .05 / 4000) = 0.0034, so [0.925, 0.975] is +-7 of it.
  ours, seeds_only = coverage(seed_sd, image_sd, np.random.default_rng(23))
  assert 0.925 <= ours <= 0.975, name
  if name == 'images dominate':
    # The seed-level t-interval holds the test images fixed: it misses the
    # image variation, which here is most of the variance of the mean.
    assert seeds_only < 0.7


def test_compare_pairs_models_within_seeds():
  unet = [[80.0, 90.0, 70.0], [60.0, 80.0, 70.0]]
  sharp = [[81.0, 92.0, 73.0], [61.0, 81.0, 70.0]]
  result = statistics.compare({'unet': unet, 'sharp_unet': sharp}, seeds=[7, 8])
  assert result['seed_level']['differences'] == pytest.approx([2.0, 2.0 / 3])
  assert [row['seed'] for row in result['image_level']] == [7, 8]
  assert result['image_level'][0]['mean_difference'] == pytest.approx(2.0)
  assert result['seeds_x_images']['num_images'] == 3
  assert result['seeds_x_images']['mean'] == pytest.approx(
    np.mean(sharp) - np.mean(unet)
  )
  with pytest.raises(ValueError, match='Unpaired'):
    statistics.compare({'unet': unet, 'sharp_unet': sharp[:1]}, seeds=[7])


def test_one_seed_has_no_interval():
  result = statistics.seed_level([1.5])
  assert result['ci95_t'] is None and result['ci95_bootstrap'] is None
  assert result['p_t'] is None and result['mean'] == 1.5
