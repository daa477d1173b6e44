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

Budgets (runs.budget_config): 'best' (the default) trains with
the paper's recipe on the validation split (reduce-on-plateau, early
stopping, the best state kept), config.num_train_steps being a cap, and
scores each run at its best validation checkpoint; 'fixed' trains exactly
num_train_steps steps with the config's schedule and scores the last state.

--folds=K runs k-fold cross-validation instead (cv.py): folds over
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

--vmap trains the seeds of each model at once in one process
(training/replicas.py; constant or cosine schedules, no periodic validation:
--budget=fixed only).
"""

import os

from sharp_unet_jax import cli
from sharp_unet_jax.evaluation import experiment_report, per_image_metrics
from sharp_unet_jax.experiment import runs, seeds


def main(argv) -> None:
  """Entry point of `python -m sharp_unet_jax.experiment`."""
  from absl import flags  # noqa: PLC0415

  values = flags.FLAGS
  summary = seeds.run_experiment(
    values.config,
    values.workdir,
    seeds=values.seeds,
    models=seeds.parse_models(values.models),
    vmap=values.vmap,
    budget=values.budget,
    folds=values.folds,
    tta=values.tta,
    absent_classes=values.absent_classes,
  )
  print(experiment_report.markdown(summary))
  print(f'Written: {os.path.join(os.path.abspath(values.workdir), "results.md")}')


def _define_flags() -> None:
  """Defines the program's flags."""
  from absl import flags  # noqa: PLC0415
  from ml_collections import config_flags  # noqa: PLC0415

  config_flags.DEFINE_config_file(
    'config', None, 'Training config file (configs/*.py).'
  )
  flags.DEFINE_string('workdir', None, 'Folder of the runs and the results.')
  flags.DEFINE_integer('seeds', 5, 'Runs per model (the paper: 5).')
  flags.DEFINE_string('models', ','.join(seeds.MODELS), 'Comma-separated models.')
  flags.DEFINE_bool('vmap', False, 'Train the seeds of a model at once (vmap).')
  flags.DEFINE_enum(
    'budget',
    'best',
    list(runs.BUDGETS),
    "'best': the paper's recipe on the validation split, num_train_steps a cap, "
    "scored at the best validation checkpoint; 'fixed': num_train_steps steps.",
  )
  flags.DEFINE_integer('folds', 0, 'K-fold cross-validation over train+validation.')
  flags.DEFINE_enum(
    'tta', 'none', list(runs.TTA), 'Test-time views of the fold ensemble.'
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
  _define_flags()
  cli.run(main)
