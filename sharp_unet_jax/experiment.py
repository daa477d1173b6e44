r"""U-Net vs Sharp U-Net over several seeds, compared at the level of seeds.

  python -m sharp_unet_jax.experiment --config=configs/default.py \
      --workdir=DIR [--seeds=5] [--budget=best|fixed] [--folds=K] \
      [--tta=none|flips] [--models=unet,sharp_unet] [--vmap] \
      [--absent_classes=skip_absent|count_absent] [--config.num_train_steps=...]

Each (model, seed k) run trains in DIR/<model>_seed<k>/ with
`train.train_and_evaluate` and config.seed = config.seed + k (initialisation,
data order and augmentation), so the two models of seed k see the same data
in the same order and are scored on the same test images. A rerun skips
finished runs (test_metrics.json present) and resumes unfinished ones from
their checkpoints.

Budgets (experiment_runs.budget_config): 'best' (the default) trains with
the paper's recipe on the validation split (reduce-on-plateau, early
stopping, the best state kept), config.num_train_steps being a cap, and
scores each run at its best validation checkpoint; 'fixed' trains exactly
num_train_steps steps with the config's schedule and scores the last state.

--folds=K runs k-fold cross-validation instead (experiment_cv.py): folds over
train + validation fixed from example ids, each fold's held-out part choosing
that fold's checkpoint, and the test split scored once, at the end, by the
ensemble of the K fold models of each seed.

Scores: each test image gets the paper's hard Jaccard and Dice (threshold
0.5, x 100; per_image_metrics.paper_scores; with several classes, a class
absent from both truth and prediction is left out of that image's mean
unless --absent_classes=count_absent). Each run also gets the paper's own
metric for its data set (evaluation/paper_protocol.py; on covid19_ct soft
probabilities against the 4-channel one-hot, background included), shown
beside the published numbers where it differs. Written to DIR:

  results.json  per model: mean and population std over seeds (the paper's
                table) and per seed; the comparison (statistics.compare):
                seed_level (one paired difference Sharp U-Net - U-Net per
                seed, mean, 95 % t-interval and bootstrap interval),
                seeds_x_images (a two-way random-effects interval over
                seeds and the shared test images) and image_level
                (paired tests within each seed, secondary); with --folds, cv.
  results.md    the same as tables, saying n, the unit, the test and what
                the result does not show.
  validation_dice.png  validation Dice against step, mean and min-max band
                over runs, per model.

--vmap trains the seeds of each model at once in one process (replicas.py;
constant or cosine schedules, no periodic validation: --budget=fixed only).
"""

import os
import time
from typing import Sequence

from absl import logging

from sharp_unet_jax import experiment_cv, experiment_runs, replicas, workdirs
from sharp_unet_jax.data import input_pipeline
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.evaluation import (
  experiment_report,
  paper_protocol,
  per_image_metrics,
  statistics,
)
from sharp_unet_jax.training import train

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


is_finished = experiment_runs.is_finished


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
      experiment_runs.train_one(run_config(config, model, k), dirs[k])
    if todo:
      seconds[model] = time.perf_counter() - begin
  return seconds


def per_image_scores(directory: str, test_data, rule: str) -> dict:
  """Per-image paper Jaccard and Dice (x 100) of a finished run; cached."""
  path = os.path.join(directory, PER_IMAGE)
  return experiment_runs.cached_test_scores(path, [directory], test_data, rule)


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
    runs = []
    for k in range(seeds):
      directory = run_dir(workdir, model, k)
      scores = per_image_scores(directory, test_data, rule)
      metrics = experiment_runs.read_json(
        os.path.join(directory, experiment_runs.METRICS)
      )
      runs.append(
        {
          'seed': int(config.seed) + k,
          'workdir': directory,
          **experiment_runs.run_means(scores),
          'step': metrics['step'],
          'last_step': metrics.get('last_step', metrics['step']),
          'checkpoint': scores['checkpoints'][0],
        }
      )
      per_image.setdefault(model, []).append(scores['dice'])
      left_out += scores['classes_left_out']
    summary['models'][model] = experiment_runs.model_table(runs)
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
    before = experiment_runs.read_json(path)
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
  experiment_runs.flips(tta)  # Checks the value before any training.
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
      experiment_cv.run(
        config, workdir, models, seeds, folds, budget, tta, absent_classes
      )
    )
  else:
    num_train = experiment_runs.num_examples(config, config.train_split)
    run = experiment_runs.budget_config(config, budget, num_train)
    summary['train_seconds'] = train_runs(run, workdir, models, seeds, vmap)
    summary.update(summarize(run, workdir, models, seeds, absent_classes))
    dirs = {m: [run_dir(workdir, m, k) for k in range(seeds)] for m in models}
    title = f'{config.dataset}, budget {budget}, {seeds} seeds per model'
    summary['learning_curve'] = experiment_runs.write_curves(workdir, dirs, title)
  summary['vmap'] = bool(vmap)
  workdirs.write_json_atomically(os.path.join(workdir, 'results.json'), summary)
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write(experiment_report.markdown(summary))
  return summary


def main(argv) -> None:
  """Entry point of `python -m sharp_unet_jax.experiment`."""
  from absl import flags  # noqa: PLC0415

  values = flags.FLAGS
  summary = run_experiment(
    values.config,
    values.workdir,
    seeds=values.seeds,
    models=parse_models(values.models),
    vmap=values.vmap,
    budget=values.budget,
    folds=values.folds,
    tta=values.tta,
    absent_classes=values.absent_classes,
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
  flags.DEFINE_enum(
    'budget',
    'best',
    list(experiment_runs.BUDGETS),
    "'best': the paper's recipe on the validation split, num_train_steps a cap, "
    "scored at the best validation checkpoint; 'fixed': num_train_steps steps.",
  )
  flags.DEFINE_integer('folds', 0, 'K-fold cross-validation over train+validation.')
  flags.DEFINE_enum(
    'tta', 'none', list(experiment_runs.TTA), 'Test-time views of the fold ensemble.'
  )
  flags.DEFINE_enum(
    'absent_classes',
    per_image_metrics.SKIP_ABSENT,
    list(per_image_metrics.ABSENT_RULES),
    'Per-image mean over classes: leave out, or count as 1, a class absent from '
    'both truth and prediction.',
  )
  flags.mark_flags_as_required(['config', 'workdir'])


if __name__ == '__main__':
  from sharp_unet_jax import cli  # noqa: PLC0415

  _define_flags()
  cli.run(main)
