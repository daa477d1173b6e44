"""The seed experiment: each (model, seed) run trained, scored and compared.

`run_experiment` is the program's work (`python -m sharp_unet_jax.experiment`,
whose flags and usage are in __main__.py); with folds it hands over to cv.py.
Runs share their configs, training and test scores with cv.py (runs.py).
"""

import os
import time
from typing import Sequence

from absl import logging

from sharp_unet_jax import workdirs
from sharp_unet_jax.data import input_pipeline
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.evaluation import (
  experiment_report,
  paper_protocol,
  per_image_metrics,
  statistics,
)
from sharp_unet_jax.experiment import cv, runs
from sharp_unet_jax.training import replicas, train

MODELS = experiment_report.MODELS
PER_IMAGE = 'per_image_test.json'
SETTINGS = 'experiment.json'


def run_dir(workdir: str, model: str, index: int) -> str:
  """The sub-workdir of one run: DIR/<model>_seed<index>."""
  return os.path.join(workdir, f'{model}_seed{index}')


def run_config(config, model: str, index: int):
  """The config of run `index` of `model`: seed = config.seed + index."""
  one = config.copy_and_resolve_references()
  one.model = model
  one.seed = int(config.seed) + index
  return one


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
    todo = [k for k in range(seeds) if not runs.is_finished(dirs[k])]
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
      runs.train_one(run_config(config, model, k), dirs[k])
    if todo:
      seconds[model] = time.perf_counter() - begin
  return seconds


def per_image_scores(directory: str, test_data, rule: str) -> dict:
  """Per-image paper Jaccard and Dice (x 100) of a finished run; cached."""
  path = os.path.join(directory, PER_IMAGE)
  return runs.cached_test_scores(path, [directory], test_data, rule)


def describe(config, budget: str, seeds: int, rule: str) -> dict:
  """What every summary states: data, protocol, budget, seeds, rule."""
  stops_on_test = config.eval_split == config.test_split
  protocol = paper_protocol.for_dataset(config.dataset)
  return {
    'dataset': config.dataset,
    'test_split': config.test_split,
    'seeds': [int(config.seed) + k for k in range(seeds)],
    'num_train_steps': config.num_train_steps,
    'budget': budget,
    'schedule': 'plateau' if budget == 'best' else config.get('schedule', 'constant'),
    'early_stopping': budget == 'best' or bool(config.get('early_stopping', False)),
    'protocol_label': (
      "the paper's protocol: the validation split is the test split, so the "
      'checkpoint is chosen on the images reported'
      if stops_on_test
      else 'independent train / validation / test splits'
    ),
    'protocol': (
      'per-image hard Jaccard and Dice at threshold 0.5, mean over test images, '
      'x 100; mean and population std over seeds'
    ),
    'absent_class_rule': rule,
    'paper': experiment_report.paper_numbers(config.dataset),
    'paper_protocol': protocol,
    'paper_protocol_description': paper_protocol.DESCRIPTIONS[protocol],
  }


def summarize(config, workdir: str, models, seeds: int, rule: str) -> dict:
  """Scores every run on the test split; the per-model table and comparison."""
  test_data = input_pipeline.load_split(config, config.test_split)
  summary = {'num_test_images': len(test_data), 'models': {}}
  per_image, left_out = {}, 0
  for model in models:
    rows = []
    for k in range(seeds):
      directory = run_dir(workdir, model, k)
      scores = per_image_scores(directory, test_data, rule)
      metrics = runs.read_json(os.path.join(directory, runs.METRICS))
      rows.append(
        {
          'seed': int(config.seed) + k,
          'workdir': directory,
          **runs.run_means(scores),
          'step': metrics['step'],
          'last_step': metrics.get('last_step', metrics['step']),
          'checkpoint': scores['checkpoints'][0],
        }
      )
      per_image.setdefault(model, []).append(scores['dice'])
      left_out += scores['classes_left_out']
    summary['models'][model] = runs.model_table(rows)
  summary['classes_left_out'] = left_out
  if all(model in per_image for model in MODELS):
    seed_values = [int(config.seed) + k for k in range(seeds)]
    summary.update(statistics.compare(per_image, seed_values))
  return summary


def check_settings(workdir: str, settings: dict) -> None:
  """Records DIR/experiment.json; refuses a DIR run with other settings.

  Raises:
    UserError: when DIR holds runs of another budget or fold count.
  """
  path = os.path.join(workdir, SETTINGS)
  if os.path.exists(path):
    before = runs.read_json(path)
    if before != settings:
      raise UserError(
        f'{workdir} holds runs made with {before}, not {settings}; use another '
        '--workdir or the same flags.'
      )
  else:
    workdirs.write_json_atomically(path, settings)


def run_experiment(
  config,
  workdir: str,
  seeds: int = 5,
  models: Sequence[str] = MODELS,
  vmap: bool = False,
  budget: str = 'best',
  folds: int = 0,
  tta: str = 'none',
  absent_classes: str = per_image_metrics.SKIP_ABSENT,
) -> dict:
  """Trains what is missing, scores every run, writes results.{json,md,png}.

  Raises:
    UserError: for bad arguments, a bad config or a failed run.
  """
  if seeds <= 0:
    raise UserError(f'--seeds must be positive, got {seeds}.')
  if folds == 1 or folds < 0:
    raise UserError(f'--folds={folds} must be 0 (no cross-validation) or 2 or more.')
  if absent_classes not in per_image_metrics.ABSENT_RULES:
    raise UserError(
      f'--absent_classes={absent_classes} must be one of '
      f'{list(per_image_metrics.ABSENT_RULES)}.'
    )
  runs.flips(tta)  # Checks the value before any training.
  workdir = workdirs.prepare(workdir)
  train.check_config(config)
  if vmap and (budget != 'fixed' or folds):
    raise UserError('--vmap needs --budget=fixed and no --folds (no validation).')
  if vmap:
    replicas.check_supported(config)
  check_settings(workdir, {'budget': budget, 'folds': folds})
  summary = describe(config, budget, seeds, absent_classes)
  if folds:
    summary.update(
      cv.run(config, workdir, models, seeds, folds, budget, tta, absent_classes)
    )
  else:
    num_train = runs.num_examples(config, config.train_split)
    run = runs.budget_config(config, budget, num_train)
    summary['train_seconds'] = train_runs(run, workdir, models, seeds, vmap)
    summary.update(summarize(run, workdir, models, seeds, absent_classes))
    dirs = {m: [run_dir(workdir, m, k) for k in range(seeds)] for m in models}
    title = f'{config.dataset}, budget {budget}, {seeds} seeds per model'
    summary['learning_curve'] = runs.write_curves(workdir, dirs, title)
  summary['vmap'] = bool(vmap)
  workdirs.write_json_atomically(os.path.join(workdir, 'results.json'), summary)
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write(experiment_report.markdown(summary))
  return summary
