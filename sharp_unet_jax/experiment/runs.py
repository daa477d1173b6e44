"""The runs of the experiment: their configs, training, and test-set predictions.

Shared by the seed experiment (seeds.py) and k-fold cross-validation (cv.py).
A run is finished when its folder holds test_metrics.json (written by
training at its very end), so a killed
experiment, launched again, trains only what is not finished, and an
unfinished run resumes from its latest checkpoint.
"""

import json
import math
import os

from absl import logging
import numpy as np

from sharp_unet_jax import evaluate, workdirs
from sharp_unet_jax.data import input_pipeline
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.evaluation import (
  experiment_report,
  learning_curves,
  paper_protocol,
  per_image_metrics,
)
from sharp_unet_jax.training import restore, train

METRICS = 'test_metrics.json'
BUDGETS = ('best', 'fixed')
TTA = ('none', 'flips')
CURVES = 'validation_dice.png'
# Evaluations the best-validation budget makes within its step cap, at least.
MIN_EVALUATIONS = 20


def read_json(path: str):
  """The JSON value in `path`."""
  with open(path) as f:
    return json.load(f)


def is_finished(directory: str) -> bool:
  """Whether the run in `directory` has written its test metrics."""
  return os.path.exists(os.path.join(directory, METRICS))


def budget_config(config, budget: str, num_train: int):
  """The config of a run under a training budget.

  'fixed' keeps the config (num_train_steps steps, its schedule). 'best' is
  the paper's recipe with the step cap num_train_steps: reduce-on-plateau
  and early stopping on the monitored validation metric, the best state kept
  and scored. It validates once per epoch, or more often so that the cap
  holds at least MIN_EVALUATIONS evaluations, and never less often than the
  config's eval_every_steps.

  Raises:
    UserError: for an unknown budget.
  """
  if budget not in BUDGETS:
    raise UserError(f'--budget={budget} must be one of {list(BUDGETS)}.')
  one = config.copy_and_resolve_references()
  if budget == 'fixed':
    return one
  one.schedule = 'plateau'
  one.early_stopping = True
  one.save_best_checkpoint = True
  epoch = math.ceil(num_train / config.batch_size)
  cap = math.ceil(config.num_train_steps / MIN_EVALUATIONS)
  one.eval_every_steps = max(1, min(config.eval_every_steps, epoch, cap))
  return one


def train_one(config, directory: str) -> None:
  """Trains (or resumes) one run to the end.

  Raises:
    UserError: if the run was preempted (relaunch to resume) or failed.
  """
  logging.info('Training %s (seed %d) in %s.', config.model, config.seed, directory)
  results = train.train_and_evaluate(config, directory)
  if results.get('preempted'):
    raise UserError(
      f'Preempted during {directory} (step {results["step"]}); run the same '
      'command again to resume.'
    )


def chosen_checkpoint(directory: str) -> str:
  """'best' or 'latest': the state whose test metrics training wrote."""
  return read_json(os.path.join(directory, METRICS)).get('checkpoint', 'latest')


class Flipped:
  """A split read with its images (and masks) flipped along some axes."""

  def __init__(self, data, axes: tuple):
    self._data, self.axes = data, axes

  def __len__(self) -> int:
    return len(self._data)

  def read(self, indices) -> dict:
    """The examples at `indices`, images and masks flipped."""
    examples = dict(self._data.read(indices))
    for key in ('image', 'mask'):
      examples[key] = np.flip(examples[key], axis=tuple(a + 1 for a in self.axes))
    return examples


def flips(tta: str) -> list[tuple]:
  """The flip axes (of H, W) of each test-time view; () is the image as is."""
  if tta not in TTA:
    raise UserError(f'--tta={tta} must be one of {list(TTA)}.')
  return [()] if tta == 'none' else [(), (0,), (1,), (0, 1)]


def averaged_probabilities(directories, test_data, tta: str = 'none'):
  """Yields (masks, probabilities) per test batch, averaged over runs and views.

  Each run's state whose test metrics it wrote is restored; every run sees
  every view (flips for --tta=flips, flipped back), and the class
  probabilities are averaged.
  """
  restored = [restore.load(d, chosen_checkpoint(d)) for d in directories]
  views = flips(tta)
  streams = [
    evaluate.predict_batches(r, Flipped(test_data, axes) if axes else test_data)
    for r in restored
    for axes in views
  ]
  for outputs in zip(*streams):
    masks = outputs[0][1]['mask']
    total = 0.0
    for (_, _, _, probabilities), axes in zip(outputs, views * len(restored)):
      total = total + np.flip(probabilities, axis=tuple(a + 1 for a in axes))
    yield masks, total / len(outputs)


def test_scores(directories, test_data, rule: str, tta: str = 'none') -> dict:
  """Per-image paper Jaccard and Dice (x 100) of runs' averaged predictions.

  One directory scores that run; several score their ensemble.

  Returns:
    {'jaccard': [...], 'dice': [...], 'classes_left_out': count}: hard,
    foreground scores at threshold 0.5 under `rule`; and 'paper_jaccard',
    'paper_dice', 'paper_protocol': the data set's paper metric
    (paper_protocol.for_dataset).
  """
  config = restore.load_config(directories[0])
  num_classes = config.num_classes
  protocol = paper_protocol.for_dataset(config.dataset)
  scores = {key: [] for key in ('jaccard', 'dice', 'paper_jaccard', 'paper_dice')}
  left_out = 0
  for masks, probabilities in averaged_probabilities(directories, test_data, tta):
    for true, probs in zip(masks, probabilities):
      j, d, absent = per_image_metrics.paper_class_scores(probs, true, num_classes)
      scores['jaccard'].append(
        100.0 * per_image_metrics.mean_over_classes(j, absent, rule)
      )
      scores['dice'].append(
        100.0 * per_image_metrics.mean_over_classes(d, absent, rule)
      )
      paper = paper_protocol.scores(protocol, probs, true, num_classes, rule)
      scores['paper_jaccard'].append(float(paper[0]))
      scores['paper_dice'].append(float(paper[1]))
      skipped = rule == per_image_metrics.SKIP_ABSENT and not absent.all()
      left_out += int(absent.sum()) if skipped and len(absent) > 1 else 0
  return {**scores, 'classes_left_out': left_out, 'paper_protocol': protocol}


def cached_test_scores(path: str, directories, test_data, rule, tta='none') -> dict:
  """test_scores, cached in `path` for the same rule and views."""
  if os.path.exists(path):
    cached = read_json(path)
    if (
      cached.get('rule') == rule and cached.get('tta') == tta and 'paper_dice' in cached
    ):
      return cached
  scores = test_scores(directories, test_data, rule, tta)
  scores.update(
    rule=rule,
    tta=tta,
    runs=[os.path.basename(d) for d in directories],
    checkpoints=[chosen_checkpoint(d) for d in directories],
  )
  workdirs.write_json_atomically(path, scores)
  return scores


def run_means(scores: dict) -> dict:
  """A run's (or ensemble's) test-set means of its per-image scores."""
  keys = ('jaccard', 'dice', 'paper_jaccard', 'paper_dice')
  return {key: float(np.mean(scores[key])) for key in keys}


def model_table(runs: list[dict]) -> dict:
  """One model's row: mean and population std over runs, and the runs."""
  stats = {
    key: experiment_report.mean_std([run[key] for run in runs])
    for key in ('jaccard', 'dice')
  }
  stats['paper_metric'] = {
    key: experiment_report.mean_std([run[f'paper_{key}'] for run in runs])
    for key in ('jaccard', 'dice')
  }
  return {**stats, 'runs': runs}


def num_examples(config, split: str) -> int:
  """The number of examples of a split (or fold) of config.dataset."""
  return len(input_pipeline.load_split(config, split))


def curve_bands(dirs_by_model: dict) -> dict:
  """{model label: learning_curves.band} over the given run folders."""
  return {
    experiment_report.NAMES[model]: learning_curves.band(
      [learning_curves.read_curve(d) for d in dirs]
    )
    for model, dirs in dirs_by_model.items()
  }


def write_curves(workdir: str, dirs_by_model: dict, title: str) -> dict:
  """Draws DIR/validation_dice.png; returns what results.json records of it."""
  bands = curve_bands(dirs_by_model)
  if not any(b['step'] for b in bands.values()):
    return {}
  learning_curves.plot(bands, os.path.join(workdir, CURVES), title)
  return {'png': CURVES, 'tag': learning_curves.TAG, 'bands': bands}
