"""K-fold cross-validation: a killed run relaunched, and a test split kept apart."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sharp_unet_jax.data import folds, input_pipeline
from sharp_unet_jax.experiment import runs, seeds
from sharp_unet_jax.training import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = {'num_train_steps': 2, 'eval_every_steps': 2, 'checkpoint_every_steps': 2}
MODELS = ('unet', 'sharp_unet')


def launch(workdir: str, tfds_dir: str) -> subprocess.Popen:
  """`python -m sharp_unet_jax.experiment --folds=2 --seeds=2` on the tiny config."""
  command = [
    sys.executable,
    '-m',
    'sharp_unet_jax.experiment',
    '--config=configs/tiny.py',
    f'--workdir={workdir}',
    '--folds=2',
    '--seeds=2',
    f'--config.data_dir={tfds_dir}',
  ] + [f'--config.{key}={value}' for key, value in STEPS.items()]
  return subprocess.Popen(
    command,
    cwd=ROOT,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    start_new_session=True,
  )


def kill_after_first_run(process: subprocess.Popen, workdir: str) -> None:
  """SIGKILLs the experiment as soon as one run has finished."""
  deadline = time.monotonic() + 240
  while not glob.glob(os.path.join(workdir, '*_fold*_seed*', 'test_metrics.json')):
    assert process.poll() is None, 'the experiment ended before it was killed'
    assert time.monotonic() < deadline, 'no run finished in time'
    time.sleep(0.2)
  os.killpg(process.pid, signal.SIGKILL)
  process.wait()


@pytest.fixture(scope='module')
def relaunched(tfds_dir, tmp_path_factory):
  """A CV experiment killed after its first run, then launched again here.

  Returns what the relaunch did, in order: ('load', split) for every split
  opened and ('train', run folder) / ('trained', run folder) around runs.
  """
  from configs import tiny  # noqa: PLC0415

  workdir = str(tmp_path_factory.mktemp('cv'))
  kill_after_first_run(launch(workdir, tfds_dir), workdir)
  before = {
    os.path.basename(os.path.dirname(path))
    for path in glob.glob(os.path.join(workdir, '*', 'test_metrics.json'))
  }
  events = []
  load_split, train_and_evaluate = input_pipeline.load_split, train.train_and_evaluate

  def recording_load(config, split, *args, **kwargs):
    events.append(('load', split))
    return load_split(config, split, *args, **kwargs)

  def recording_train(config, directory):
    events.append(('train', os.path.basename(directory)))
    result = train_and_evaluate(config, directory)
    events.append(('trained', os.path.basename(directory)))
    return result

  config = tiny.get_config()
  config.data_dir = tfds_dir
  config.update(STEPS)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(input_pipeline, 'load_split', recording_load)
    patch.setattr(train, 'train_and_evaluate', recording_train)
    summary = seeds.run_experiment(config, workdir, seeds=2, folds=2)
  return config, workdir, before, events, summary


def all_runs():
  return {f'{m}_fold{f}_seed{k}' for m in MODELS for f in range(2) for k in range(2)}


def test_relaunch_after_a_kill_trains_only_the_unfinished_runs(relaunched):
  _, workdir, before, events, _ = relaunched
  assert before and before < all_runs()  # killed part-way
  trained = [name for kind, name in events if kind == 'trained']
  assert sorted(trained) == sorted(all_runs() - before)
  for name in all_runs():
    assert os.path.exists(os.path.join(workdir, name, 'test_metrics.json'))


def test_the_test_split_is_read_only_for_the_final_scoring(relaunched):
  config, workdir, _, events, summary = relaunched
  last_training = max(i for i, (kind, _) in enumerate(events) if kind == 'trained')
  loads = [(i, split) for i, (kind, split) in enumerate(events) if kind == 'load']
  assert config.test_split == 'test'
  assert [i for i, split in loads if split == 'test'] and all(
    i > last_training for i, split in loads if split == 'test'
  )
  for i, split in loads:
    if i < last_training:
      assert folds.parse(split)[0] == 'train+validation', split
  # Each run's checkpoint was chosen, and scored, on its own held-out fold.
  decisions = summary['decisions']
  for decision in decisions[:-1]:
    fold = int(decision['run'].split('_fold')[1][0])
    assert decision['split'] == folds.split_name(
      'train+validation', fold, 2, 'held_out'
    )
  assert decisions[-1] == {'decision': 'final scoring', 'split': 'test'}
  with open(os.path.join(workdir, 'results.json')) as f:
    saved = json.load(f)
  assert saved['decisions'] == decisions


def test_folds_cover_the_pool_once_and_never_the_test_split(relaunched):
  config, _, _, _, _ = relaunched
  held_out = [
    input_pipeline.load_split(
      config, folds.split_name('train+validation', fold, 2, 'held_out')
    )
    for fold in range(2)
  ]
  ids = [set(part.read(np.arange(len(part)))['id'].tolist()) for part in held_out]
  test = input_pipeline.load_split(config, 'test')
  test_ids = set(test.read(np.arange(len(test)))['id'].tolist())
  assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 64 + 16
  assert abs(len(ids[0]) - len(ids[1])) <= 1 and not (ids[0] | ids[1]) & test_ids


def test_results_report_cv_folds_ensemble_and_seed_level(relaunched):
  _, workdir, _, _, summary = relaunched
  cv = summary['cv']
  for model in MODELS:
    assert [row['fold'] for row in cv['folds'][model]] == [0, 1]
    fold_means = [row['dice'] for row in cv['folds'][model]]
    assert cv['mean_std'][model]['dice']['mean'] == pytest.approx(np.mean(fold_means))
    ensemble = cv['ensemble_test'][model]
    assert len(ensemble['runs']) == 2 and 0 <= ensemble['dice']['mean'] <= 100
  differences = [
    sharp['dice'] - unet['dice']
    for unet, sharp in zip(
      cv['ensemble_test']['unet']['runs'], cv['ensemble_test']['sharp_unet']['runs']
    )
  ]
  assert summary['seed_level']['differences'] == pytest.approx(differences)
  with open(os.path.join(workdir, 'results.md')) as f:
    text = f.read()
  assert '2-fold cross-validation over `train+validation`' in text


def test_flips_average_views_of_the_same_models(relaunched):
  config, workdir, _, _, _ = relaunched
  dirs = [os.path.join(workdir, f'sharp_unet_fold{f}_seed0') for f in range(2)]
  test = input_pipeline.load_split(config, 'test')
  view = runs.Flipped(test, (1,))
  np.testing.assert_array_equal(
    view.read([3])['image'], test.read([3])['image'][:, :, ::-1]
  )
  masks, plain = next(runs.averaged_probabilities(dirs, test, 'none'))
  same, flipped = next(runs.averaged_probabilities(dirs, test, 'flips'))
  np.testing.assert_array_equal(masks, same)  # scored against unflipped truth
  assert plain.shape == flipped.shape == (8, 32, 32, 1)
  assert not np.allclose(plain, flipped)  # four views, not one
  assert 0.0 <= flipped.min() and flipped.max() <= 1.0


def test_cv_refuses_a_test_split_used_for_validation(tiny_config, tmp_path):
  tiny_config.eval_split = 'test'  # the paper protocol's shape
  with pytest.raises(seeds.UserError, match='--folds needs a test split'):
    seeds.run_experiment(tiny_config, str(tmp_path), seeds=1, folds=2)
