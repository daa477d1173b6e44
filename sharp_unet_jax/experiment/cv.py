"""K-fold cross-validation of U-Net and Sharp U-Net, with an untouched test set.

Run by `python -m sharp_unet_jax.experiment ... --folds=K --seeds=N`:

1. The pool train + validation (config.train_split + config.eval_split) is
   cut into K folds fixed from the example ids (data/folds.py). The test
   split is not in the pool.
2. Run (model, fold i, seed k) trains in DIR/<model>_fold<i>_seed<k> on the
   other K - 1 folds; fold i is its validation split and its "test" split,
   so fold i alone chooses the run's checkpoint (best validation state with
   --budget=best) and gives its cross-validation score. A killed experiment,
   launched again, trains only the runs without test_metrics.json.
3. Only when every run has finished is the test split opened: for each model
   and seed the K fold models predict it, their probabilities are averaged
   (over flips too with --tta=flips), and each image gets the paper's
   Jaccard and Dice. These ensemble scores, one table per seed, give the
   seed-level comparison (statistics.compare).

Every choice of a checkpoint is recorded with the split it was made on
('decisions' in results.json), and the final scoring last.
"""

import os
import time

from absl import logging
import numpy as np

from sharp_unet_jax.data import folds as folds_lib
from sharp_unet_jax.data import input_pipeline
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.evaluation import experiment_report, statistics
from sharp_unet_jax.experiment import runs


def fold_dir(workdir: str, model: str, fold: int, index: int) -> str:
  """The folder of one cross-validation run."""
  return os.path.join(workdir, f'{model}_fold{fold}_seed{index}')


def pool_of(config) -> str:
  """The pool the folds cut: the training and validation splits together."""
  return f'{config.train_split}+{config.eval_split}'


def fold_config(config, model: str, fold: int, folds: int, index: int, budget: str):
  """Run config: train on the other folds; fold `fold` validates and scores."""
  pool = pool_of(config)
  one = config.copy_and_resolve_references()
  one.model = model
  one.seed = int(config.seed) + index
  one.train_split = folds_lib.split_name(pool, fold, folds, 'train')
  one.eval_split = folds_lib.split_name(pool, fold, folds, 'held_out')
  one.test_split = one.eval_split
  num_train = runs.num_examples(one, one.train_split)
  return runs.budget_config(one, budget, num_train)


def train_folds(config, workdir, models, seeds, folds, budget) -> dict:
  """Trains every unfinished (model, fold, seed) run; wall seconds per model."""
  seconds = {}
  for model in models:
    begin, trained = time.perf_counter(), 0
    for index in range(seeds):
      for fold in range(folds):
        directory = fold_dir(workdir, model, fold, index)
        if runs.is_finished(directory):
          continue
        one = fold_config(config, model, fold, folds, index, budget)
        runs.train_one(one, directory)
        trained += 1
    logging.info('%s: trained %d runs.', model, trained)
    if trained:
      seconds[model] = time.perf_counter() - begin
  return seconds


def fold_scores(workdir, models, seeds, folds) -> tuple[dict, list]:
  """Per-fold held-out scores (x 100) per model, and the decisions made."""
  table, decisions = {}, []
  for model in models:
    rows = []
    for fold in range(folds):
      dice, jaccard = [], []
      for index in range(seeds):
        directory = fold_dir(workdir, model, fold, index)
        path = os.path.join(directory, runs.METRICS)
        metrics = runs.read_json(path)
        dice.append(100.0 * metrics['dice_per_image'])
        jaccard.append(100.0 * metrics['iou_per_image'])
        decisions.append(
          {
            'run': os.path.basename(directory),
            'decision': f'checkpoint: {metrics.get("checkpoint", "latest")} state',
            'step': metrics['step'],
            'split': metrics['split'],
          }
        )
      rows.append(
        {
          'fold': fold,
          'dice_per_seed': dice,
          'jaccard_per_seed': jaccard,
          'dice': float(np.mean(dice)),
          'jaccard': float(np.mean(jaccard)),
        }
      )
    table[model] = rows
  return table, decisions


def ensemble_test(config, workdir, models, seeds, folds, tta, rule) -> dict:
  """Per-seed ensemble test scores per model; opens the test split."""
  test_data = input_pipeline.load_split(config, config.test_split)
  per_model, per_image, left_out = {}, {}, 0
  for model in models:
    rows = []
    for index in range(seeds):
      dirs = [fold_dir(workdir, model, fold, index) for fold in range(folds)]
      path = os.path.join(workdir, f'{model}_seed{index}_ensemble_{tta}.json')
      scores = runs.cached_test_scores(path, dirs, test_data, rule, tta)
      rows.append(
        {
          'seed': int(config.seed) + index,
          **runs.run_means(scores),
          'checkpoint': f'ensemble of {folds} folds, tta {tta}',
        }
      )
      per_image.setdefault(model, []).append(scores['dice'])
      left_out += scores['classes_left_out']
    per_model[model] = runs.model_table(rows)
  return {
    'num_test_images': len(test_data),
    'models': per_model,
    'per_image': per_image,
    'classes_left_out': left_out,
  }


def run(config, workdir, models, seeds, folds, budget, tta, rule) -> dict:
  """Trains what is missing, then scores the fold ensembles on the test split.

  Returns:
    The summary entries of cross-validation: models (the ensembles' test
    scores), the comparison, cv, decisions, learning_curve, train_seconds.
  """
  if config.test_split in (config.train_split, config.eval_split):
    raise UserError(
      f'--folds needs a test split apart from train and validation; config.'
      f'test_split={config.test_split!r} is one of them (the paper protocol).'
    )
  seconds = train_folds(config, workdir, models, seeds, folds, budget)
  table, decisions = fold_scores(workdir, models, seeds, folds)
  # Only now, every checkpoint chosen, is the test split read.
  ensemble = ensemble_test(config, workdir, models, seeds, folds, tta, rule)
  decisions.append({'decision': 'final scoring', 'split': config.test_split})
  summary = {
    'protocol_label': (
      f'{folds}-fold cross-validation over {pool_of(config)} (folds fixed from '
      'the example ids, each held-out fold choosing its checkpoint); the test '
      'split read once, at the end, by the fold ensembles'
    ),
    'train_seconds': seconds,
    'num_test_images': ensemble['num_test_images'],
    'models': ensemble['models'],
    'classes_left_out': ensemble['classes_left_out'],
    'decisions': decisions,
    'cv': {
      'num_folds': folds,
      'pool': pool_of(config),
      'folds': table,
      'mean_std': {
        model: {
          key: experiment_report.mean_std([row[key] for row in rows])
          for key in ('jaccard', 'dice')
        }
        for model, rows in table.items()
      },
      'ensemble_test': {
        model: {**result, 'tta': tta} for model, result in ensemble['models'].items()
      },
    },
  }
  seed_values = [int(config.seed) + k for k in range(seeds)]
  if all(model in ensemble['per_image'] for model in experiment_report.MODELS):
    summary.update(statistics.compare(ensemble['per_image'], seed_values))
  dirs = {
    m: [fold_dir(workdir, m, f, k) for f in range(folds) for k in range(seeds)]
    for m in models
  }
  title = f'{config.dataset}, {folds}-fold CV, budget {budget}, {seeds} seeds'
  summary['learning_curve'] = runs.write_curves(workdir, dirs, title)
  return summary
