"""Seed-level statistics against values worked out by hand on made-up tables."""

import itertools

import numpy as np
import pytest

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


def test_hierarchical_bootstrap_resamples_seeds_then_images():
  # 2 seeds x 3 images: 2**2 seed draws x (3**3)**2 image draws = 2916
  # equally likely resamples, enumerated here.
  table = np.array([[0.0, 1.0, 5.0], [2.0, 2.0, 8.0]])
  means = []
  for seeds in itertools.product(range(2), repeat=2):
    rows = [list(itertools.product(table[s], repeat=3)) for s in seeds]
    means += [np.mean(a + b) for a in rows[0] for b in rows[1]]
  exact = np.percentile(means, [2.5, 97.5])
  result = statistics.hierarchical_bootstrap(table, samples=20_000, seed=0)
  assert result['mean'] == pytest.approx(3.0)
  assert result['ci95'] == pytest.approx(exact, abs=0.12)
  # Resampling seeds only (each seed's mean) would give a narrower interval.
  seeds_only = exact_bootstrap_percentiles(table.mean(axis=1))
  assert result['ci95'][1] - result['ci95'][0] > seeds_only[1] - seeds_only[0] + 1


def test_compare_pairs_models_within_seeds():
  unet = [[80.0, 90.0, 70.0], [60.0, 80.0, 70.0]]
  sharp = [[81.0, 92.0, 73.0], [61.0, 81.0, 70.0]]
  result = statistics.compare({'unet': unet, 'sharp_unet': sharp}, seeds=[7, 8])
  assert result['seed_level']['differences'] == pytest.approx([2.0, 2.0 / 3])
  assert [row['seed'] for row in result['image_level']] == [7, 8]
  assert result['image_level'][0]['mean_difference'] == pytest.approx(2.0)
  assert result['hierarchical_bootstrap']['num_images'] == 3
  with pytest.raises(ValueError, match='Unpaired'):
    statistics.compare({'unet': unet, 'sharp_unet': sharp[:1]}, seeds=[7])


def test_one_seed_has_no_interval():
  result = statistics.seed_level([1.5])
  assert result['ci95_t'] is None and result['ci95_bootstrap'] is None
  assert result['p_t'] is None and result['mean'] == 1.5
