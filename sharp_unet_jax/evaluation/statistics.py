"""Seed-level statistics of a paired model comparison, and its secondary parts.

The unit of replication is the seed: each seed trains both models with the
same initialisation seed, data order and test images, so one seed gives one
paired difference (Sharp U-Net - U-Net of the test-set mean score). The
headline is the mean of those differences with

- a 95 % t-interval (scipy.stats.t, n - 1 degrees of freedom, the sample
  standard deviation) and the one-sample t-test against 0;
- a 95 % percentile bootstrap interval over seeds (scipy.stats.bootstrap);
- a hierarchical bootstrap that resamples seeds, then images within each
  drawn seed, so both sources of variation enter the interval.

Image-level paired tests within one seed (paired_comparison)
are secondary: they treat images as the unit and say nothing about another
seed.
"""

from typing import Optional

import numpy as np
from scipy import stats

BOOTSTRAP_SAMPLES = 10_000
CONFIDENCE = 0.95


def t_interval(values, confidence: float = CONFIDENCE) -> Optional[list[float]]:
  """The t-interval of the mean of `values`; None for fewer than 2 values."""
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return None
  low, high = stats.t.interval(
    confidence, len(values) - 1, loc=values.mean(), scale=stats.sem(values)
  )
  if not np.isfinite(low):  # All values equal: no spread at all.
    return [float(values.mean())] * 2
  return [float(low), float(high)]


def bootstrap_interval(
  values, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> Optional[list[float]]:
  """Percentile bootstrap interval of the mean; None for fewer than 2 values."""
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return None
  if np.all(values == values[0]):
    return [float(values[0])] * 2
  result = stats.bootstrap(
    (values,),
    np.mean,
    n_resamples=samples,
    confidence_level=CONFIDENCE,
    method='percentile',
    rng=np.random.default_rng(seed),
  )
  interval = result.confidence_interval
  return [float(interval.low), float(interval.high)]


def seed_level(differences, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
  """The headline: per-seed paired differences, their mean and intervals.

  Args:
    differences: one paired difference per seed.
    samples: bootstrap resamples.
    seed: seed of the bootstrap's generator.

  Returns:
    A dict with differences, n, mean, std (ddof 1), ci95_t, ci95_bootstrap
    ([low, high] or None for n < 2), t_statistic and p_t (one-sample t-test
    against 0, two-sided; None for n < 2 or no spread).
  """
  values = np.asarray(differences, np.float64)
  n = len(values)
  result = {
    'differences': [float(v) for v in values],
    'n': n,
    'unit': 'seed',
    'mean': float(values.mean()),
    'std': float(values.std(ddof=1)) if n > 1 else None,
    'ci95_t': t_interval(values),
    'ci95_bootstrap': bootstrap_interval(values, samples, seed),
    'bootstrap_samples': samples,
    'test': 'one-sample t-test of the per-seed differences against 0',
    't_statistic': None,
    'p_t': None,
  }
  if n > 1 and np.std(values) > 0:
    test = stats.ttest_1samp(values, 0.0)
    result['t_statistic'] = float(test.statistic)
    result['p_t'] = float(test.pvalue)
  return result


def hierarchical_bootstrap(
  differences, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0, chunk: int = 500
) -> dict:
  """Resamples seeds, then images within each drawn seed; 95 % percentile CI.

  Args:
    differences: (seeds, images) per-image paired differences, each row from
      one seed's pair of runs.
    samples: bootstrap resamples.
    seed: seed of the generator.
    chunk: resamples drawn at once (bounds memory).

  Returns:
    {'mean', 'ci95', 'samples', 'num_seeds', 'num_images'}.
  """
  table = np.asarray(differences, np.float64)
  if table.ndim != 2 or not table.size:
    raise ValueError(f'Expected a (seeds, images) table, got shape {table.shape}.')
  num_seeds, num_images = table.shape
  rng = np.random.default_rng(seed)
  means = []
  for start in range(0, samples, chunk):
    size = min(chunk, samples - start)
    seeds = rng.integers(0, num_seeds, (size, num_seeds))
    images = rng.integers(0, num_images, (size, num_seeds, num_images))
    means.append(table[seeds[..., None], images].mean(axis=(1, 2)))
  means = np.concatenate(means)
  return {
    'mean': float(table.mean()),
    'ci95': [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
    'samples': samples,
    'num_seeds': num_seeds,
    'num_images': num_images,
  }


def paired_comparison(
  a: np.ndarray, b: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> dict:
  """Mean of b - a over images, bootstrap 95 % CI and Wilcoxon p-value."""
  differences = np.asarray(b, np.float64) - np.asarray(a, np.float64)
  if np.any(differences != 0):
    test = stats.wilcoxon(differences)
    statistic, p_value = float(test.statistic), float(test.pvalue)
  else:
    statistic, p_value = 0.0, 1.0
  return {
    'mean_difference': float(differences.mean()),
    'ci95': bootstrap_interval(differences, samples, seed),
    'wilcoxon_statistic': statistic,
    'wilcoxon_p': p_value,
    'num_images': int(len(differences)),
    'images_better': int(np.sum(differences > 0)),
    'images_worse': int(np.sum(differences < 0)),
    'bootstrap_samples': samples,
  }


def compare(per_image: dict, seeds, samples: int = BOOTSTRAP_SAMPLES) -> dict:
  """Seed-level headline, hierarchical bootstrap and image-level secondary.

  Args:
    per_image: {'unet': rows, 'sharp_unet': rows}, one row of per-image scores
      per seed, the same seeds and test images in the same order.
    seeds: the seed of each row.
    samples: bootstrap resamples.

  Returns:
    {'seed_level', 'hierarchical_bootstrap', 'image_level'}; differences are
    sharp_unet - unet.
  """
  unet = np.asarray(per_image['unet'], np.float64)
  sharp = np.asarray(per_image['sharp_unet'], np.float64)
  if unet.shape != sharp.shape:
    raise ValueError(f'Unpaired tables: {unet.shape} and {sharp.shape}.')
  return {
    'seed_level': seed_level(sharp.mean(axis=1) - unet.mean(axis=1), samples),
    'hierarchical_bootstrap': hierarchical_bootstrap(sharp - unet, samples),
    'image_level': [
      {'seed': int(s), **paired_comparison(u, h, samples)}
      for s, u, h in zip(seeds, unet, sharp)
    ],
  }
