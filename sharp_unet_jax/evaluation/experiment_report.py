"""Tables of the experiment (`python -m sharp_unet_jax.experiment`): the
paper's layout, the seed-level comparison, CV."""

from typing import Optional

import numpy as np

from sharp_unet_jax.evaluation import paper_protocol

MODELS = ('unet', 'sharp_unet')
NAMES = {'unet': 'U-Net', 'sharp_unet': 'Sharp U-Net'}
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


def _interval(pair, digits: int = 2) -> str:
  if not pair:
    return 'n/a (one seed)'
  return f'[{pair[0]:+.{digits}f}, {pair[1]:+.{digits}f}]'


def _setting(summary: dict) -> list[str]:
  cv = summary.get('cv')
  scoring = (
    f'the ensemble of the {cv["num_folds"]} fold models of each seed '
    f'(probabilities averaged, test-time views: '
    f'{next(iter(cv["ensemble_test"].values()))["tta"]})'
    if cv
    else (
      'each run at its best validation checkpoint'
      if summary['budget'] == 'best'
      else 'each run at its last step'
    )
  )
  return [
    f'# U-Net vs Sharp U-Net on {summary["dataset"]}',
    '',
    f'{len(summary["seeds"])} seeds per model ({summary["seeds"]}); budget '
    f'`{summary["budget"]}` ({summary["num_train_steps"]} steps'
    f'{" at most" if summary["budget"] == "best" else ""}, schedule '
    f'{summary["schedule"]}, early stopping '
    f'{"on" if summary["early_stopping"] else "off"}); protocol: '
    f'{summary["protocol_label"]}; test split `{summary["test_split"]}` '
    f'({summary["num_test_images"]} images), scored by {scoring}. '
    f'Scores: {summary["protocol"]}. Per-image means over classes: '
    f'{summary["absent_class_rule"]} ({summary["classes_left_out"]} image-class '
    'pairs with the class absent from both truth and prediction left out).',
  ]


def _crossed(crossed: Optional[dict]) -> list[str]:
  """The seeds x images interval, or why there is none."""
  if not crossed:
    return ['Seeds x images interval: n/a (it needs 2 seeds and 2 images).']
  parts = crossed['variance_components']
  df = 'n/a' if crossed['df'] is None else f'{crossed["df"]:.1f}'
  return [
    f'Over seeds and test images together (both random; every seed scores the '
    f'same images): 95 % interval {_interval(crossed["ci95"])}, {crossed["method"]} '
    f'(df = {df}; variance components, points²: seed {parts["seed"]:.3g}, '
    f'image {parts["image"]:.3g}, residual {parts["residual"]:.3g}). The '
    'seed-level intervals above hold these test images fixed; this one also '
    'counts the draw of the test images.'
  ]


def _comparison(summary: dict) -> list[str]:
  seed, crossed = summary['seed_level'], summary.get('seeds_x_images')
  p_value = 'n/a' if seed['p_t'] is None else f'{seed["p_t"]:.3g}'
  lines = [
    '',
    '## Comparison at the level of seeds (the headline)',
    '',
    f'Unit: the seed (n = {seed["n"]}). Each seed trains both models with the '
    'same initialisation seed and data order and scores them on the same test '
    'images; its paired difference is Sharp U-Net - U-Net of the mean '
    'per-image Dice (points).',
    '',
    '| Seed | ' + ' | '.join(str(s) for s in summary['seeds']) + ' |',
    '| --- |' + ' --- |' * len(summary['seeds']),
    '| Difference | ' + ' | '.join(f'{d:+.2f}' for d in seed['differences']) + ' |',
    '',
    f'Mean difference {seed["mean"]:+.2f} points; 95 % t-interval '
    f'{_interval(seed["ci95_t"])} ({seed["test"]}: p = {p_value}); 95 % '
    f'bootstrap interval over seeds {_interval(seed["ci95_bootstrap"])} '
    f'({seed["bootstrap_samples"]:,} resamples, percentile).',
    '',
    *_crossed(crossed),
    '',
    f'What this does not show: with n = {seed["n"]} seeds the intervals are '
    'wide and a bootstrap over so few values is rough; the result holds for '
    'this data set, configuration and budget only, and says nothing about '
    'other data, sizes or training lengths.',
    '',
    '### Secondary: image-level paired statistics within each seed',
    '',
    'Images as the unit, one seed at a time: these say how consistent the '
    'difference is over the test images of that seed, not how it varies '
    'between seeds.',
    '',
    '| Seed | Mean difference | Bootstrap 95 % CI (images) | Wilcoxon p | '
    'Better / worse images |',
    '| --- | --- | --- | --- | --- |',
  ]
  for row in summary['image_level']:
    lines.append(
      f'| {row["seed"]} | {row["mean_difference"]:+.2f} | '
      f'{_interval(row["ci95"])} | {row["wilcoxon_p"]:.3g} | '
      f'{row["images_better"]} / {row["images_worse"]} |'
    )
  return lines


def _cv(cv: dict) -> list[str]:
  lines = [
    '',
    f'## {cv["num_folds"]}-fold cross-validation over `{cv["pool"]}`',
    '',
    "Folds fixed from the example ids; each fold held out chose its run's "
    'checkpoint and gives its score (so the fold scores are optimistic). '
    'Held-out per-image Dice x 100, mean over seeds:',
    '',
    '| Model | '
    + ' | '.join(f'fold {r["fold"]}' for r in next(iter(cv['folds'].values())))
    + ' | CV mean ± std over folds | Ensemble on test |',
    '| --- |' + ' --- |' * (cv['num_folds'] + 2),
  ]
  for model, rows in cv['folds'].items():
    test = cv['ensemble_test'][model]['dice']
    lines.append(
      f'| {NAMES[model]} | '
      + ' | '.join(f'{r["dice"]:.2f}' for r in rows)
      + f' | {_cell(cv["mean_std"][model]["dice"])} | {_cell(test)} |'
    )
  return lines


def _runs(summary: dict) -> list[str]:
  lines = [
    '',
    '## Runs',
    '',
    '| Model | Seed | Jaccard | Dice | Scored state | Last step |',
    '| --- | --- | --- | --- | --- | --- |',
  ]
  for model, result in summary['models'].items():
    for run in result['runs']:
      state = run['checkpoint']
      if 'step' in run:
        state = f'step {run["step"]} ({state})'
      lines.append(
        f'| {NAMES[model]} | {run["seed"]} | {run["jaccard"]:.2f} | '
        f'{run["dice"]:.2f} | {state} | {run.get("last_step", "-")} |'
      )
  if summary.get('train_seconds'):
    times = ', '.join(
      f'{NAMES[m]} {s:.0f} s' for m, s in summary['train_seconds'].items()
    )
    how = 'vmap over seeds' if summary.get('vmap') else 'runs one after another'
    lines += ['', f'Training wall time of this invocation: {times} ({how}).']
  return lines


def _paper_rows(summary: dict) -> list[str]:
  """The published row, after ours under the paper's metric where it differs."""
  protocol = summary.get('paper_protocol', paper_protocol.HARD_FOREGROUND)
  lines = []
  if protocol != paper_protocol.HARD_FOREGROUND:
    ours = {m: result['paper_metric'] for m, result in summary['models'].items()}
    lines.append(_row(f"{summary['dataset']} (ours, the paper's metric)", ours))
  lines.append(
    _row(f'{summary["paper"]["dataset"]} (paper)', summary['paper']['models'])
  )
  lines += [
    '',
    f"The paper's metric on this data set: {paper_protocol.DESCRIPTIONS[protocol]}"
    + (
      '; ours above is the same computation.'
      if protocol == paper_protocol.HARD_FOREGROUND
      else "; compare the paper's row with the row so labelled, not with ours."
    ),
  ]
  return lines


def markdown(summary: dict) -> str:
  """results.md: the paper's table, the seed-level comparison, CV and runs."""
  header = ' | '.join(f'{NAMES[m]} {k}' for k in ('Jaccard', 'Dice') for m in MODELS)
  lines = _setting(summary) + [
    '',
    f'| Dataset | {header} |',
    '| --- | --- | --- | --- | --- |',
    _row(f'{summary["dataset"]} (ours)', summary['models']),
  ]
  if summary['paper']:
    lines += _paper_rows(summary)
  if 'seed_level' in summary:
    lines += _comparison(summary)
  if summary.get('cv'):
    lines += _cv(summary['cv'])
  if summary.get('learning_curve'):
    lines += [
      '',
      f'Validation Dice against step (mean and min-max band over runs): '
      f'![validation Dice]({summary["learning_curve"]["png"]})',
    ]
  lines += _runs(summary)
  return '\n'.join(lines) + '\n'
