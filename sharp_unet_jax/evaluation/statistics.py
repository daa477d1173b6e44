"""Seed-level statistics of a paired model comparison, and its secondary parts.

The unit of replication is the seed: each seed trains both models with the
same initialisation seed, data order and test images, so one seed gives one
paired difference (Sharp U-Net - U-Net of the test-set mean score). The
headline is the mean of those differences with

- a 95 % t-interval (scipy.stats.t, n - 1 degrees of freedom, the sample
  standard deviation) and the one-sample t-test against 0;
- a 95 % percentile bootstrap interval over seeds (scipy.stats.bootstrap);
- the seeds x images interval (seeds_x_images): every seed scores the same
  test images, so seeds and images are crossed, not nested; a two-way
  random-effects model lets both the seed and the image variation enter the
  interval, each at its own size (a seed-level interval holds the test
  images fixed and leaves the image variation out).

Why not a bootstrap for the last: resampling seeds, then images within each
drawn seed, treats the design as nested and lets the image effect enter at
only 1/S of its size; one that resamples seeds and one shared image set is
right in structure, but a percentile bootstrap over 5 seeds is too narrow
(no t quantile; about 87 % coverage, as reported in issue 23). On simulated
crossed 5 x 200 tables the nested bootstrap covered 67-83 % of the time at
95 %; the variance-components interval with Satterthwaite degrees of freedom
covers 0.946 whether seeds or images dominate (tests/statistics_test.py).

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


def _mean_squares(tables: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Grand means, two-way ANOVA mean squares (seed, image, residual) and dfs."""
  seeds, images = tables.shape[-2:]
  mean = tables.mean(axis=(-2, -1))
  by_seed, by_image = tables.mean(axis=-1), tables.mean(axis=-2)
  residual = tables - by_seed[..., None] - by_image[..., None, :]
  residual += mean[..., None, None]
  dfs = np.array([seeds - 1, images - 1, (seeds - 1) * (images - 1)], np.float64)
  sums = [
    images * np.sum((by_seed - mean[..., None]) ** 2, axis=-1),
    seeds * np.sum((by_image - mean[..., None]) ** 2, axis=-1),
    np.sum(residual**2, axis=(-2, -1)),
  ]
  return mean, np.stack(sums, axis=-1) / dfs, dfs


def crossed_intervals(tables, confidence: float = CONFIDENCE) -> dict:
  """Two-way random-effects intervals of the grand mean of crossed tables.

  Each table is one (seeds, images) array in which every seed scored the same
  images: d[s, i] = mu + a_s + b_i + e_si with independent seed, image and
  residual effects. The grand mean then has variance
  var_seed / S + var_image / I + var_residual / (S I), estimated from the
  two-way ANOVA mean squares MS_seed, MS_image, MS_residual as
  (MS_seed + MS_image - MS_residual) / (S I), with a seed or image component
  that comes out negative set to 0 (its mean square replaced by
  MS_residual). The interval is mean +- t(df) sqrt(variance), df by
  Satterthwaite's approximation for that sum of mean squares.

  Args:
    tables: (..., seeds, images) array; leading axes are separate tables
      (vectorised, e.g. for simulation).
    confidence: the interval's coverage.

  Returns:
    {'mean', 'low', 'high', 'df', 'var_seed', 'var_image', 'var_residual'},
    arrays of the leading shape. A table without spread gives low = high =
    mean and df NaN.

  Raises:
    ValueError: for fewer than 2 seeds or 2 images.
  """
  tables = np.asarray(tables, np.float64)
  if tables.ndim < 2 or min(tables.shape[-2:]) < 2:
    raise ValueError(
      f'Expected (..., seeds, images) with both >= 2, got {tables.shape}.'
    )
  seeds, images = tables.shape[-2:]
  mean, squares, dfs = _mean_squares(tables)
  # A component below 0 is set to 0: its mean square gives way to MS_residual.
  keep = squares[..., :2] >= squares[..., 2:]
  weights = np.concatenate([keep, 1.0 - keep.sum(-1, keepdims=True)], axis=-1)
  total = np.sum(weights * squares, axis=-1)
  with np.errstate(divide='ignore', invalid='ignore'):
    df = total**2 / np.sum((weights * squares) ** 2 / dfs, axis=-1)
    half = stats.t.ppf(0.5 + confidence / 2, df) * np.sqrt(total / (seeds * images))
  half = np.where(total > 0, half, 0.0)
  return {
    'mean': mean,
    'low': mean - half,
    'high': mean + half,
    'df': df,
    'var_seed': keep[..., 0] * (squares[..., 0] - squares[..., 2]) / images,
    'var_image': keep[..., 1] * (squares[..., 1] - squares[..., 2]) / seeds,
    'var_residual': squares[..., 2],
  }


def seeds_x_images(differences, confidence: float = CONFIDENCE) -> Optional[dict]:
  """The interval of the mean paired difference over seeds and shared images.

  Args:
    differences: (seeds, images) per-image paired differences; every seed's
      row scores the same test images, in the same order (a crossed design).
    confidence: the interval's coverage.

  Returns:
    {'mean', 'ci95', 'df', 'variance_components', 'method', 'num_seeds',
    'num_images'} (crossed_intervals on the one table), or None for fewer
    than 2 seeds or 2 images.
  """
  table = np.asarray(differences, np.float64)
  if table.ndim != 2:
    raise ValueError(f'Expected a (seeds, images) table, got shape {table.shape}.')
  if min(table.shape) < 2:
    return None
  result = crossed_intervals(table, confidence)
  df = float(result['df'])
  return {
    'mean': float(result['mean']),
    'ci95': [float(result['low']), float(result['high'])],
    'df': df if np.isfinite(df) else None,
    'variance_components': {
      k: float(result[f'var_{k}']) for k in ('seed', 'image', 'residual')
    },
    'method': (
      'two-way random effects, seeds x images crossed: variance of the mean '
      'from ANOVA mean squares (negative components set to 0), t quantile '
      'with Satterthwaite degrees of freedom'
    ),
    'num_seeds': int(table.shape[0]),
    'num_images': int(table.shape[1]),
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
  """Seed-level headline, seeds x images interval and image-level secondary.

  Args:
    per_image: {'unet': rows, 'sharp_unet': rows}, one row of per-image scores
      per seed, the same seeds and test images in the same order.
    seeds: the seed of each row.
    samples: bootstrap resamples.

  Returns:
    {'seed_level', 'seeds_x_images', 'image_level'}; differences are
    sharp_unet - unet.
  """
  unet = np.asarray(per_image['unet'], np.float64)
  sharp = np.asarray(per_image['sharp_unet'], np.float64)
  if unet.shape != sharp.shape:
    raise ValueError(f'Unpaired tables: {unet.shape} and {sharp.shape}.')
  return {
    'seed_level': seed_level(sharp.mean(axis=1) - unet.mean(axis=1), samples),
    'seeds_x_images': seeds_x_images(sharp - unet),
    'image_level': [
      {'seed': int(s), **paired_comparison(u, h, samples)}
      for s, u, h in zip(seeds, unet, sharp)
    ],
  }
