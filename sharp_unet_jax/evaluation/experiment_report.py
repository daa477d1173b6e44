"""Statistics and tables of experiment.py: the paper's layout, the paired test."""

from typing import Optional

import numpy as np
from scipy import stats

MODELS = ('unet', 'sharp_unet')
NAMES = {'unet': 'U-Net', 'sharp_unet': 'Sharp U-Net'}
BOOTSTRAP_SAMPLES = 10_000
# The paper's table, x 100, mean and std over 5 runs, in its column order:
# U-Net Jaccard, Sharp U-Net Jaccard, U-Net Dice, Sharp U-Net Dice.
PAPER = {
  'lung_ct': ('Lung', 94.75, 0.58, 95.22, 0.67, 97.03, 0.31, 97.25, 0.36),
  'dsb2018': ('DSB-2018', 84.95, 0.26, 85.26, 0.27, 91.47, 0.18, 91.75, 0.15),
  'isic2018': ('ISIC-2018', 74.74, 4.46, 76.07, 1.03, 83.25, 3.73, 84.34, 0.86),
  'covid19_ct': ('COVID-19 CT', 85.25, 1.96, 87.39, 3.07, 91.85, 1.17, 93.01, 1.85),
  'isbi2012': ('ISBI-2012', 83.95, 3.47, 87.00, 4.95, 91.23, 2.11, 92.96, 2.95),
  'cvc_clinicdb': ('CVC-ClinicDB', 70.02, 9.37, 75.89, 2.07, 78.75, 8.11, 83.65, 1.88),
}


def mean_std(values) -> dict:
  """Mean and population std (ddof 0, as the paper) of per-seed values."""
  values = np.asarray(values, np.float64)
  return {'mean': float(values.mean()), 'std': float(values.std())}


def paired_comparison(
  a: np.ndarray, b: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> dict:
  """Mean of b - a over images, bootstrap 95 % CI and Wilcoxon p-value."""
  differences = np.asarray(b, np.float64) - np.asarray(a, np.float64)
  rng = np.random.default_rng(seed)
  resampled = rng.integers(0, len(differences), (samples, len(differences)))
  means = differences[resampled].mean(axis=1)
  if np.any(differences != 0):
    test = stats.wilcoxon(differences)
    statistic, p_value = float(test.statistic), float(test.pvalue)
  else:
    statistic, p_value = 0.0, 1.0
  return {
    'mean_difference': float(differences.mean()),
    'ci95': [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
    'wilcoxon_statistic': statistic,
    'wilcoxon_p': p_value,
    'num_images': int(len(differences)),
    'images_better': int(np.sum(differences > 0)),
    'images_worse': int(np.sum(differences < 0)),
    'bootstrap_samples': samples,
  }


def paper_numbers(dataset: str) -> Optional[dict]:
  """The paper's published results for a TFDS data set name, or None."""
  name = dataset.split('/')[0].split(':')[0]
  if name not in PAPER:
    return None
  label, *numbers = PAPER[name]
  cells = [{'mean': m, 'std': s} for m, s in zip(numbers[::2], numbers[1::2])]
  return {
    'dataset': label,
    'models': {
      'unet': {'jaccard': cells[0], 'dice': cells[2]},
      'sharp_unet': {'jaccard': cells[1], 'dice': cells[3]},
    },
  }


def _cell(stat: Optional[dict], digits: int = 2) -> str:
  if not stat:
    return '-'
  return f'{stat["mean"]:.{digits}f} ± {stat["std"]:.{digits}f}'


def _row(label: str, models: dict) -> str:
  cells = [
    _cell(models.get(model, {}).get(metric))
    for metric in ('jaccard', 'dice')
    for model in MODELS
  ]
  return f'| {label} | ' + ' | '.join(cells) + ' |'


def markdown(summary: dict) -> str:
  """results.md: the paper's table layout, the paired test and the runs."""
  header = ' | '.join(f'{NAMES[m]} {k}' for k in ('Jaccard', 'Dice') for m in MODELS)
  lines = [
    f'# U-Net vs Sharp U-Net on {summary["dataset"]}',
    '',
    f'{len(summary["seeds"])} seeds per model ({summary["seeds"]}), '
    f'{summary["num_train_steps"]} training steps, schedule '
    f'{summary["schedule"]}, early stopping '
    f'{"on" if summary["early_stopping"] else "off"}; test split '
    f'`{summary["test_split"]}` ({summary["num_test_images"]} images). '
    f'Scores: {summary["protocol"]}.',
    '',
    f'| Dataset | {header} |',
    '| --- | --- | --- | --- | --- |',
    _row(f'{summary["dataset"]} (ours)', summary['models']),
  ]
  if summary['paper']:
    lines.append(
      _row(f'{summary["paper"]["dataset"]} (paper)', summary['paper']['models'])
    )
  paired = summary.get('paired')
  if paired:
    low, high = paired['ci95']
    lines += [
      '',
      '## Paired comparison on the same test images',
      '',
      f'Mean per-image Dice difference Sharp U-Net - U-Net: '
      f'{paired["mean_difference"]:+.3f} points (bootstrap 95 % CI '
      f'[{low:+.3f}, {high:+.3f}], {paired["bootstrap_samples"]:,} resamples of '
      f'the {paired["num_images"]} images); Wilcoxon signed-rank p = '
      f'{paired["wilcoxon_p"]:.3g}. Sharp U-Net is better on '
      f'{paired["images_better"]} images and worse on {paired["images_worse"]}. '
      "Each image's Dice is averaged over the seeds of each model first.",
    ]
  lines += [
    '',
    '## Runs',
    '',
    '| Model | Seed | Jaccard | Dice | Step scored | Last step |',
    '| --- | --- | --- | --- | --- | --- |',
  ]
  for model, result in summary['models'].items():
    for run in result['runs']:
      lines.append(
        f'| {NAMES[model]} | {run["seed"]} | {run["jaccard"]:.2f} | '
        f'{run["dice"]:.2f} | {run["step"]} ({run["checkpoint"]}) | '
        f'{run["last_step"]} |'
      )
  if summary['train_seconds']:
    times = ', '.join(
      f'{NAMES[m]} {s:.0f} s' for m, s in summary['train_seconds'].items()
    )
    how = 'vmap over seeds' if summary.get('vmap') else 'seeds one after another'
    lines += ['', f'Training wall time of this invocation: {times} ({how}).']
  return '\n'.join(lines) + '\n'
