r"""U-Net vs Sharp U-Net over several seeds, reported like the paper, with a test.

  python -m sharp_unet_jax.experiment --config=configs/default.py \
      --workdir=DIR [--seeds=5] [--models=unet,sharp_unet] [--vmap] \
      [--config.num_train_steps=...]

Each (model, seed k) run trains in DIR/<model>_seed<k>/ with
`train.train_and_evaluate` and config.seed = config.seed + k (initialisation,
data order and augmentation). A rerun skips finished runs (test_metrics.json
present) and resumes unfinished ones from their checkpoints.

Then every run's parameters (the state its test metrics were taken from:
the best checkpoint after early stopping, else the latest) are restored, the
test split is predicted, and each test image gets the paper's hard Jaccard
and Dice (threshold 0.5, x 100; per_image_metrics.paper_scores), cached in
the run folder as per_image_test.json. Written to DIR:

  results.json  per model: Jaccard and Dice, mean and population std over
                seeds of the per-image means (the paper's protocol), and per
                seed; the paper's published numbers when config.dataset is
                one of its six data sets; the paired comparison.
  results.md    the same as tables, in the paper's layout.

Paired comparison on the same test images: each image's Dice is first
averaged over the seeds of each model; the differences Sharp U-Net - U-Net
over images give the mean difference, a 95 % bootstrap confidence interval
(resampling images, 10,000 resamples, percentile method) and the Wilcoxon
signed-rank test's two-sided p-value (scipy.stats.wilcoxon; zero differences
dropped). It says whether Sharp U-Net is better on these images with these
seeds; the seed spread is in the table.

--vmap trains the seeds of each model at once in one process (replicas.py):
per-replica batches, so replica k sees the batches of seed k's sequential
run. Constant or cosine schedules only; no periodic validation. On CPU it
is about 5x slower than seeds in sequence (measured in replicas.py).

Measured on synthetic_lesions with configs/default.py, 5 seeds, 150 steps
(CPU, 2 shared cores; about 20 minutes for the 10 runs): see
docs/experiments.md for the table.
"""

import json
import os
import time
from typing import Sequence

from absl import logging
import numpy as np

from sharp_unet_jax import evaluate, replicas, workdirs
from sharp_unet_jax.data import input_pipeline
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.evaluation import experiment_report, per_image_metrics
from sharp_unet_jax.training import restore, train

MODELS = experiment_report.MODELS

METRICS = 'test_metrics.json'
PER_IMAGE = 'per_image_test.json'


def run_dir(workdir: str, model: str, index: int) -> str:
  """The sub-workdir of one run: DIR/<model>_seed<index>."""
  return os.path.join(workdir, f'{model}_seed{index}')


def run_config(config, model: str, index: int):
  """The config of run `index` of `model`: seed = config.seed + index."""
  one = config.copy_and_resolve_references()
  one.model = model
  one.seed = int(config.seed) + index
  return one


def is_finished(directory: str) -> bool:
  """Whether the run in `directory` has written its test metrics."""
  return os.path.exists(os.path.join(directory, METRICS))


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def parse_models(value: str) -> list[str]:
  """'unet,sharp_unet' -> a list of known model names.

  Raises:
    UserError: for an unknown or repeated name.
  """
  names = [name.strip() for name in str(value).split(',') if name.strip()]
  unknown = [name for name in names if name not in MODELS]
  if not names or unknown or len(set(names)) != len(names):
    raise UserError(f'--models={value} must list distinct names of {list(MODELS)}.')
  return names


def train_runs(config, workdir: str, models, seeds: int, vmap: bool) -> dict:
  """Trains every unfinished run; returns the wall seconds spent per model."""
  seconds = {}
  for model in models:
    dirs = [run_dir(workdir, model, k) for k in range(seeds)]
    todo = [k for k in range(seeds) if not is_finished(dirs[k])]
    logging.info('%s: %d of %d runs to train.', model, len(todo), seeds)
    begin = time.perf_counter()
    if vmap and todo:
      replicas.train_replicas(
        run_config(config, model, 0),
        [int(config.seed) + k for k in todo],
        [dirs[k] for k in todo],
        os.path.join(workdir, f'{model}_vmap_state'),
      )
    for k in [] if vmap else todo:
      results = train.train_and_evaluate(run_config(config, model, k), dirs[k])
      if results.get('preempted'):
        raise UserError(
          f'Preempted during {dirs[k]} (step {results["step"]}); run the same '
          'command again to resume.'
        )
    if todo:
      seconds[model] = time.perf_counter() - begin
  return seconds


def per_image_scores(directory: str, test_data) -> dict:
  """Per-image paper Jaccard and Dice (x 100) of a finished run; cached."""
  path = os.path.join(directory, PER_IMAGE)
  if os.path.exists(path):
    return _read_json(path)
  which = _read_json(os.path.join(directory, METRICS)).get('checkpoint', 'latest')
  restored = restore.load(directory, which)
  num_classes = restored.config.num_classes
  pairs = [
    per_image_metrics.paper_scores(probabilities[k], true, num_classes)
    for _, examples, _, probabilities in evaluate.predict_batches(restored, test_data)
    for k, true in enumerate(examples['mask'])
  ]
  scores = {
    'checkpoint': which,
    'step': restored.step,
    'jaccard': [p[0] for p in pairs],
    'dice': [p[1] for p in pairs],
  }
  workdirs.write_json_atomically(path, scores)
  return scores


def summarize(config, workdir: str, models, seeds: int, seconds: dict) -> dict:
  """Collects per-image scores of every run into the results dictionary."""
  test_data = input_pipeline.load_split(config, config.test_split)
  summary = {
    'dataset': config.dataset,
    'test_split': config.test_split,
    'num_test_images': len(test_data),
    'seeds': [int(config.seed) + k for k in range(seeds)],
    'num_train_steps': config.num_train_steps,
    'schedule': config.get('schedule', 'constant'),
    'early_stopping': bool(config.get('early_stopping', False)),
    'protocol': (
      'per-image hard Jaccard and Dice at threshold 0.5, mean over test images, '
      'x 100; mean and population std over seeds'
    ),
    'train_seconds': seconds,
    'models': {},
    'paper': experiment_report.paper_numbers(config.dataset),
  }
  per_image = {}
  for model in models:
    runs = []
    for k in range(seeds):
      directory = run_dir(workdir, model, k)
      scores = per_image_scores(directory, test_data)
      metrics = _read_json(os.path.join(directory, METRICS))
      runs.append(
        {
          'seed': int(config.seed) + k,
          'workdir': directory,
          'jaccard': float(np.mean(scores['jaccard'])),
          'dice': float(np.mean(scores['dice'])),
          'step': metrics['step'],
          'last_step': metrics.get('last_step', metrics['step']),
          'checkpoint': scores['checkpoint'],
        }
      )
      per_image.setdefault(model, []).append(scores['dice'])
    summary['models'][model] = {
      'jaccard': experiment_report.mean_std([r['jaccard'] for r in runs]),
      'dice': experiment_report.mean_std([r['dice'] for r in runs]),
      'runs': runs,
    }
  if all(model in per_image for model in MODELS):
    unet, sharp = (np.mean(per_image[m], axis=0) for m in MODELS)
    summary['paired'] = {
      'metric': 'dice x 100',
      'difference': 'sharp_unet - unet',
      'pairing': 'per test image, each model averaged over its seeds first',
      **experiment_report.paired_comparison(unet, sharp),
    }
  return summary


def run_experiment(
  config,
  workdir: str,
  seeds: int = 5,
  models: Sequence[str] = MODELS,
  vmap: bool = False,
) -> dict:
  """Trains what is missing, scores every run, writes results.{json,md}.

  Raises:
    UserError: for bad arguments, a bad config or a failed run.
  """
  if seeds <= 0:
    raise UserError(f'--seeds must be positive, got {seeds}.')
  workdir = workdirs.prepare(workdir)
  train.check_config(config)
  if vmap:
    replicas.check_supported(config)
  seconds = train_runs(config, workdir, models, seeds, vmap)
  summary = summarize(config, workdir, models, seeds, seconds)
  summary['vmap'] = bool(vmap)
  workdirs.write_json_atomically(os.path.join(workdir, 'results.json'), summary)
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write(experiment_report.markdown(summary))
  return summary


def main(argv) -> None:
  """Entry point of `python -m sharp_unet_jax.experiment`."""
  from absl import flags  # noqa: PLC0415

  values = flags.FLAGS
  if len(argv) > 1:
    raise UserError(f'Unexpected arguments: {" ".join(argv[1:])}')
  summary = run_experiment(
    values.config,
    values.workdir,
    seeds=values.seeds,
    models=parse_models(values.models),
    vmap=values.vmap,
  )
  print(experiment_report.markdown(summary))
  print(f'Written: {os.path.join(os.path.abspath(values.workdir), "results.md")}')


def _define_flags() -> None:
  from absl import flags  # noqa: PLC0415
  from ml_collections import config_flags  # noqa: PLC0415

  config_flags.DEFINE_config_file(
    'config', None, 'Training config file (configs/*.py).'
  )
  flags.DEFINE_string('workdir', None, 'Folder of the runs and the results.')
  flags.DEFINE_integer('seeds', 5, 'Runs per model (the paper: 5).')
  flags.DEFINE_string('models', ','.join(MODELS), 'Comma-separated models.')
  flags.DEFINE_bool('vmap', False, 'Train the seeds of a model at once (vmap).')
  flags.mark_flags_as_required(['config', 'workdir'])


if __name__ == '__main__':
  from sharp_unet_jax import cli  # noqa: PLC0415

  _define_flags()
  cli.run(main)
