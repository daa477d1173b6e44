"""The U-Net vs Sharp U-Net runner: results, skipping and resuming, vmap, stats."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import training_states

from sharp_unet_jax.evaluation import experiment_report, statistics
from sharp_unet_jax.experiment import runs, seeds
from sharp_unet_jax.training import checkpointing, replicas, restore, train


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
  summary = seeds.run_experiment(config, workdir, seeds=2, budget='fixed')
  return config, workdir, summary


def read_results(workdir: str) -> dict:
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def test_writes_results_in_the_papers_layout(finished):
  _, workdir, summary = finished
  saved = read_results(workdir)
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
  assert saved['paper'] is None  # synthetic data: no published numbers
  assert saved['budget'] == 'fixed'
  assert os.path.getsize(os.path.join(workdir, 'validation_dice.png')) > 1000
  assert saved['learning_curve']['bands']['U-Net']['step'] == [2]
  with open(os.path.join(workdir, 'results.md')) as f:
    text = f.read()
  assert '| Dataset | U-Net Jaccard | Sharp U-Net Jaccard | U-Net Dice |' in text
  assert 'Unit: the seed (n = 2)' in text and '95 % t-interval' in text
  assert 'Secondary: image-level' in text and 'What this does not show' in text
  assert 'Over seeds and test images together' in text
  assert summary['models'].keys() == saved['models'].keys()


def test_compares_the_models_at_the_level_of_seeds(finished):
  _, workdir, _ = finished
  saved = read_results(workdir)
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
  # t-interval of 2 seeds by hand: mean +- t(0.975, 1 df) |d0 - d1| / 2, with
  # t = 12.7062 (tables): the sample std of two values is |d0 - d1| / sqrt 2.
  half = 12.7062 * abs(expected[0] - expected[1]) / 2
  assert seed_level['ci95_t'] == pytest.approx(
    [np.mean(expected) - half, np.mean(expected) + half], abs=1e-3
  )
  # The seeds x images interval is taken on the (seeds, images) table of
  # per-image Dice differences that the runs cached, in that orientation.
  table = [
    np.subtract(*(read_per_image(saved, model, k) for model in ('sharp_unet', 'unet')))
    for k in range(2)
  ]
  crossed = statistics.seeds_x_images(table)
  for key in ('mean', 'ci95', 'df'):
    assert saved['seeds_x_images'][key] == pytest.approx(crossed[key]), key
  assert saved['seeds_x_images']['num_images'] == 16
  # Secondary: image-level paired tests, one per seed, on the 16 test images.
  assert [row['seed'] for row in saved['image_level']] == [0, 1]
  for row, difference, per_image in zip(saved['image_level'], expected, table):
    assert row['num_images'] == 16
    assert row['mean_difference'] == pytest.approx(difference)
    assert row['images_better'] == np.sum(per_image > 0)
    assert row['images_worse'] == np.sum(per_image < 0)


def read_per_image(saved: dict, model: str, k: int) -> np.ndarray:
  """Run k's cached per-image test Dice, read from its folder."""
  folder = saved['models'][model]['runs'][k]['workdir']
  with open(os.path.join(folder, seeds.PER_IMAGE)) as f:
    return np.asarray(json.load(f)['dice'])


def test_rerun_skips_finished_runs_and_resumes_unfinished(finished, monkeypatch):
  config, workdir, summary = finished
  unfinished = seeds.run_dir(workdir, 'unet', 1)
  os.remove(os.path.join(unfinished, 'test_metrics.json'))
  calls = []
  real = train.train_and_evaluate

  def counting(run_config, run_workdir):
    calls.append((run_config.model, run_config.seed, run_workdir))
    return real(run_config, run_workdir)

  monkeypatch.setattr(train, 'train_and_evaluate', counting)
  again = seeds.run_experiment(config, workdir, seeds=2, budget='fixed')
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
  summary = seeds.run_experiment(
    config, vmapped, seeds=2, models=['unet'], vmap=True, budget='fixed'
  )
  assert summary['vmap'] and 'seed_level' not in summary
  # Adam's first steps move each weight by about lr x sign(gradient), so the
  # weights say little about the gradients' size; its moments do: after 2
  # steps mu = 0.09 g1 + 0.1 g2 and nu = 0.000999 g1^2 + 0.001 g2^2.
  unet = seeds.run_config(config, 'unet', 0)
  manager = checkpointing.create_manager(os.path.join(vmapped, 'unet_vmap_state'))
  stacked = checkpointing.restore(
    manager, replicas.ReplicaTrainer(unet).init(jnp.arange(2, dtype=jnp.int32))
  )
  manager.close()
  for k in range(2):
    ours = restore.load(seeds.run_dir(vmapped, 'unet', k))
    manager = checkpointing.create_manager(seeds.run_dir(workdir, 'unet', k))
    theirs = checkpointing.restore(manager, train.Trainer(unet).initial_state())
    manager.close()
    assert ours.step == int(theirs.step) == 2 == int(stacked.step[k])
    one = jax.tree.map(lambda leaf: leaf[k], stacked)
    # Same init, batches and steps; only float summation order differs.
    training_states.assert_moments_close(one.opt_state, theirs.opt_state)
    for a, b in zip(
      jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(theirs.params)
    ):
      np.testing.assert_allclose(a, b, atol=2e-4, rtol=0)  # about lr x sign(g)
    for a, b in zip(
      jax.tree_util.tree_leaves(ours.params), jax.tree_util.tree_leaves(stacked.params)
    ):
      np.testing.assert_array_equal(a, np.asarray(b)[k])  # the run folder's copy
  # A rerun finds everything finished.
  again = seeds.run_experiment(
    config, vmapped, seeds=2, models=['unet'], vmap=True, budget='fixed'
  )
  assert again['train_seconds'] == {}


def test_paired_comparison_by_hand():
  a = np.full(6, 80.0)
  b = a + np.array([1.0, -2.0, 3.0, 4.0, 5.0, 6.0])
  result = statistics.paired_comparison(a, b, samples=2000)
  assert result['mean_difference'] == pytest.approx(17 / 6)
  assert (result['images_better'], result['images_worse']) == (5, 1)
  # Wilcoxon signed-rank, exact: the |differences| rank 1..6, the one negative
  # has rank 2, so W- = 2; two-sided p = 2 P(W- <= 2) under the null, where
  # each of the 2^6 = 64 sign patterns is equally likely and 3 of them ({},
  # {1}, {2}) have a negative rank sum <= 2: p = 2 x 3 / 64 = 0.09375.
  assert result['wilcoxon_statistic'] == 2.0
  assert result['wilcoxon_p'] == pytest.approx(0.09375)
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
  with pytest.raises(seeds.UserError, match='--models=unet,resnet'):
    seeds.parse_models('unet,resnet')


def test_a_workdir_of_other_settings_is_refused(finished):
  config, workdir, _ = finished
  with pytest.raises(seeds.UserError, match='budget'):
    seeds.run_experiment(config, workdir, seeds=2, budget='best')


def test_best_budget_is_the_papers_recipe_with_a_step_cap(tiny_config):
  tiny_config.num_train_steps = 1000
  tiny_config.eval_every_steps = 500
  best = runs.budget_config(tiny_config, 'best', num_train=64)
  assert best.schedule == 'plateau' and best.early_stopping
  assert best.save_best_checkpoint and best.num_train_steps == 1000
  assert best.eval_every_steps == 8  # one epoch: 64 images, batch 8
  fixed = runs.budget_config(tiny_config, 'fixed', num_train=64)
  assert fixed.to_dict() == tiny_config.to_dict()
  with pytest.raises(seeds.UserError, match='--budget=long'):
    runs.budget_config(tiny_config, 'long', num_train=64)
