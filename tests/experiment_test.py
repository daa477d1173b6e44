"""The U-Net vs Sharp U-Net runner: results, skipping and resuming, vmap, stats."""

import json
import os

import jax
import numpy as np
import pytest
from scipy import stats

from sharp_unet_jax import experiment, experiment_runs
from sharp_unet_jax.evaluation import experiment_report, statistics
from sharp_unet_jax.training import restore, train


def small_config(tfds_dir):
  from configs import tiny  # noqa: PLC0415

  config = tiny.get_config()
  config.data_dir = tfds_dir
  config.num_train_steps = 2
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  return config


@pytest.fixture(scope='module')
def finished(tfds_dir, tmp_path_factory):
  """An experiment of both models x 2 seeds, run to the end."""
  workdir = str(tmp_path_factory.mktemp('experiment'))
  config = small_config(tfds_dir)
  summary = experiment.run_experiment(config, workdir, seeds=2, budget='fixed')
  return config, workdir, summary


def test_writes_results_in_the_papers_layout(finished):
  _, workdir, summary = finished
  with open(os.path.join(workdir, 'results.json')) as f:
    saved = json.load(f)
  assert saved['seeds'] == [0, 1] and saved['num_test_images'] == 16
  for model in ('unet', 'sharp_unet'):
    result = saved['models'][model]
    per_seed = [run['dice'] for run in result['runs']]
    assert len(per_seed) == 2
    assert result['dice']['mean'] == pytest.approx(np.mean(per_seed))
    assert result['dice']['std'] == pytest.approx(np.std(per_seed))  # population
    for metric in ('jaccard', 'dice'):
      assert 0.0 <= result[metric]['mean'] <= 100.0
    # The per-image scores agree with training's own test metrics.
    for run in result['runs']:
      with open(os.path.join(run['workdir'], 'test_metrics.json')) as f:
        metrics = json.load(f)
      assert run['dice'] == pytest.approx(100 * metrics['dice_per_image'], abs=1e-3)
  # The headline: one paired difference per seed, from the runs' own means.
  seed_level = saved['seed_level']
  expected = [
    sharp['dice'] - unet['dice']
    for unet, sharp in zip(
      saved['models']['unet']['runs'], saved['models']['sharp_unet']['runs']
    )
  ]
  assert seed_level['differences'] == pytest.approx(expected)
  assert seed_level['mean'] == pytest.approx(np.mean(expected))
  for key in ('ci95_t', 'ci95_bootstrap'):
    low, high = seed_level[key]
    assert low <= seed_level['mean'] <= high
  low, high = saved['hierarchical_bootstrap']['ci95']
  assert low <= seed_level['mean'] + 1e-9 and seed_level['mean'] - 1e-9 <= high
  # Secondary: image-level paired tests, one per seed, on the 16 test images.
  assert [row['seed'] for row in saved['image_level']] == [0, 1]
  for row, difference in zip(saved['image_level'], expected):
    assert row['num_images'] == 16
    assert row['mean_difference'] == pytest.approx(difference)
    assert 0.0 <= row['wilcoxon_p'] <= 1.0
  assert saved['paper'] is None  # synthetic data: no published numbers
  assert saved['budget'] == 'fixed'
  assert os.path.getsize(os.path.join(workdir, 'validation_dice.png')) > 1000
  assert saved['learning_curve']['bands']['U-Net']['step'] == [2]
  with open(os.path.join(workdir, 'results.md')) as f:
    text = f.read()
  assert '| Dataset | U-Net Jaccard | Sharp U-Net Jaccard | U-Net Dice |' in text
  assert 'Unit: the seed (n = 2)' in text and '95 % t-interval' in text
  assert 'Secondary: image-level' in text and 'What this does not show' in text
  assert summary['models'].keys() == saved['models'].keys()


def test_rerun_skips_finished_runs_and_resumes_unfinished(finished, monkeypatch):
  config, workdir, summary = finished
  unfinished = experiment.run_dir(workdir, 'unet', 1)
  os.remove(os.path.join(unfinished, 'test_metrics.json'))
  calls = []
  real = train.train_and_evaluate

  def counting(run_config, run_workdir):
    calls.append((run_config.model, run_config.seed, run_workdir))
    return real(run_config, run_workdir)

  monkeypatch.setattr(train, 'train_and_evaluate', counting)
  again = experiment.run_experiment(config, workdir, seeds=2, budget='fixed')
  # Only the unfinished run ran; it resumed at its last checkpoint (step 2).
  assert calls == [('unet', 1, unfinished)]
  with open(os.path.join(unfinished, 'test_metrics.json')) as f:
    assert json.load(f)['step'] == 2
  for model in ('unet', 'sharp_unet'):
    assert again['models'][model]['dice'] == pytest.approx(
      summary['models'][model]['dice']
    )


def test_vmap_trains_the_same_models_as_sequential_runs(finished, tmp_path):
  config, workdir, _ = finished
  vmapped = str(tmp_path)
  summary = experiment.run_experiment(
    config, vmapped, seeds=2, models=['unet'], vmap=True, budget='fixed'
  )
  assert summary['vmap'] and 'seed_level' not in summary
  for k in range(2):
    ours = restore.load(experiment.run_dir(vmapped, 'unet', k))
    theirs = restore.load(experiment.run_dir(workdir, 'unet', k))
    assert ours.step == theirs.step == 2
    for a, b in zip(
      jax.tree_util.tree_leaves(ours.params), jax.tree_util.tree_leaves(theirs.params)
    ):
      # Same init, batches and steps; only float summation order differs
      # (Adam's first steps move each weight by about lr = 1e-3).
      np.testing.assert_allclose(a, b, atol=2e-4, rtol=0)
  # A rerun finds everything finished.
  again = experiment.run_experiment(
    config, vmapped, seeds=2, models=['unet'], vmap=True, budget='fixed'
  )
  assert again['train_seconds'] == {}


def test_paired_comparison_matches_scipy():
  rng = np.random.default_rng(1)
  a = rng.uniform(70, 90, 50)
  b = a + rng.normal(0.5, 1.0, 50)
  result = statistics.paired_comparison(a, b, samples=2000)
  assert result['mean_difference'] == pytest.approx(np.mean(b - a))
  assert result['wilcoxon_p'] == pytest.approx(stats.wilcoxon(b - a).pvalue)
  low, high = result['ci95']
  assert low < np.mean(b - a) < high and high - low < 1.0
  same = statistics.paired_comparison(a, a, samples=100)
  assert same['wilcoxon_p'] == 1.0 and same['ci95'] == [0.0, 0.0]


# The paper's published table (Zunair and Ben Hamza 2021), as printed: mean +- std
# over 5 runs, in %.
PAPER_TABLE = """
| Lung | 94.75 +- 0.58 | 95.22 +- 0.67 | 97.03 +- 0.31 | 97.25 +- 0.36 |
| DSB-2018 | 84.95 +- 0.26 | 85.26 +- 0.27 | 91.47 +- 0.18 | 91.75 +- 0.15 |
| ISIC-2018 | 74.74 +- 4.46 | 76.07 +- 1.03 | 83.25 +- 3.73 | 84.34 +- 0.86 |
| COVID-19 CT | 85.25 +- 1.96 | 87.39 +- 3.07 | 91.85 +- 1.17 | 93.01 +- 1.85 |
| ISBI-2012 | 83.95 +- 3.47 | 87.00 +- 4.95 | 91.23 +- 2.11 | 92.96 +- 2.95 |
| CVC-ClinicDB | 70.02 +- 9.37 | 75.89 +- 2.07 | 78.75 +- 8.11 | 83.65 +- 1.88 |
"""
COLUMNS = [('unet', 'jaccard'), ('sharp_unet', 'jaccard'), ('unet', 'dice')]
COLUMNS += [('sharp_unet', 'dice')]
TFDS_NAMES = {
  'Lung': 'lung_ct',
  'DSB-2018': 'dsb2018',
  'ISIC-2018': 'isic2018/default',
  'COVID-19 CT': 'covid19_ct:1.0.0',
  'ISBI-2012': 'isbi2012',
  'CVC-ClinicDB': 'cvc_clinicdb',
}


def test_paper_numbers_are_the_published_table():
  assert experiment_report.paper_numbers('synthetic_lesions/small') is None
  rows = [line.strip('| ').split(' | ') for line in PAPER_TABLE.strip().splitlines()]
  for label, *cells in rows:
    got = experiment_report.paper_numbers(TFDS_NAMES[label])
    assert got['dataset'] == label
    for (model, metric), cell in zip(COLUMNS, cells, strict=True):
      mean, std = (float(v) for v in cell.split(' +- '))
      assert got['models'][model][metric] == {'mean': mean, 'std': std}, label


def test_bad_models_fail_clearly():
  with pytest.raises(experiment.UserError, match='--models=unet,resnet'):
    experiment.parse_models('unet,resnet')


def test_a_workdir_of_other_settings_is_refused(finished):
  config, workdir, _ = finished
  with pytest.raises(experiment.UserError, match='budget'):
    experiment.run_experiment(config, workdir, seeds=2, budget='best')


def test_best_budget_is_the_papers_recipe_with_a_step_cap(tiny_config):
  tiny_config.num_train_steps = 1000
  tiny_config.eval_every_steps = 500
  best = experiment_runs.budget_config(tiny_config, 'best', num_train=64)
  assert best.schedule == 'plateau' and best.early_stopping
  assert best.save_best_checkpoint and best.num_train_steps == 1000
  assert best.eval_every_steps == 8  # one epoch: 64 images, batch 8
  fixed = experiment_runs.budget_config(tiny_config, 'fixed', num_train=64)
  assert fixed.to_dict() == tiny_config.to_dict()
  with pytest.raises(experiment.UserError, match='--budget=long'):
    experiment_runs.budget_config(tiny_config, 'long', num_train=64)
