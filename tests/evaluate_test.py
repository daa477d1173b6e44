"""The evaluate command on a tiny trained workdir, and restoring workdirs."""

import csv
import json
import os
import shutil

import numpy as np
from PIL import Image
import pytest

from configs import tiny
from sharp_unet_jax import evaluate
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.evaluation import split_summary
from sharp_unet_jax.training import restore, train


@pytest.fixture(scope='module')
def trained_workdir(tfds_dir, tmp_path_factory):
  """configs/tiny.py trained for its 6 steps (checkpoints at steps 3 and 6)."""
  config = tiny.get_config()
  config.data_dir = tfds_dir
  workdir = str(tmp_path_factory.mktemp('trained'))
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def evaluated(trained_workdir):
  return evaluate.evaluate(trained_workdir, num_worst=3)


def read_rows(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def test_writes_csv_json_markdown_and_worst_overlays(trained_workdir, evaluated):
  out = os.path.join(trained_workdir, 'eval_test')
  assert evaluated['output_dir'] == out
  rows = read_rows(os.path.join(out, 'per_image.csv'))
  assert len(rows) == 16
  for column in (
    'index',
    'id',
    'dice',
    'iou',
    'precision',
    'recall',
    'hd95',
    'paper_jaccard',
    'paper_dice',
    'dice_class1',
    'hd95_class1',
    'empty_case_class1',
  ):
    assert column in rows[0]
  for key in ('dice', 'iou', 'precision', 'recall', 'hd95'):
    values = np.array([float(r[key]) for r in rows])
    assert np.all(np.isfinite(values))
    assert evaluated['per_image'][key]['mean'] == pytest.approx(values.mean())
    assert evaluated['per_image'][key]['std'] == pytest.approx(values.std())

  with open(os.path.join(out, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['step'] == 6 and summary['split'] == 'test'
  assert summary['num_images'] == 16 and summary['hd95_unit'] == 'pixels'
  counts = summary['empty_masks']['class1']
  assert set(counts) == {'both_empty', 'pred_empty', 'true_empty'}
  with open(os.path.join(out, 'summary.md')) as f:
    text = f.read()
  assert 'Paper: probabilities thresholded at 0.5 per foreground class' in text
  assert f'{summary["paper_protocol"]["dice"]["mean"]:.2f}' in text

  worst = sorted(os.listdir(os.path.join(out, 'worst')))
  assert len(worst) == 3 and [w['file'] for w in summary['worst']] == [
    f'worst/{name}' for name in worst
  ]
  dice = sorted(float(r['dice']) for r in rows)
  assert [w['dice'] for w in summary['worst']] == pytest.approx(dice[:3])
  panel = np.asarray(Image.open(os.path.join(out, 'worst', worst[0])))
  assert panel.shape == (256, 3 * 256, 3)  # 32 x 32 images, enlarged 8 times.


def test_numbers_match_training_and_the_paper_protocol(trained_workdir, evaluated):
  with open(os.path.join(trained_workdir, 'test_metrics.json')) as f:
    trained = json.load(f)
  # Same checkpoint, same data, same hard predictions as training's metrics.
  assert evaluated['pooled']['dice'] == pytest.approx(trained['dice'], abs=1e-4)
  assert evaluated['pooled']['iou'] == pytest.approx(trained['iou'], abs=1e-4)
  per_image = evaluated['per_image']
  assert per_image['dice']['mean'] == pytest.approx(trained['dice_per_image'], abs=1e-4)
  paper = evaluated['paper_protocol']
  assert paper['dice']['mean'] == pytest.approx(
    100 * trained['dice_per_image'], abs=1e-2
  )
  assert paper['jaccard']['mean'] == pytest.approx(
    100 * trained['iou_per_image'], abs=1e-2
  )


def test_checkpoint_choice_and_best(trained_workdir, tmp_path):
  assert restore.load(trained_workdir, '3').step == 3
  with pytest.raises(UserError, match='no best checkpoint'):
    restore.load(trained_workdir, 'best')
  with pytest.raises(UserError, match='not latest, best or a step'):
    restore.load(trained_workdir, 'newest')
  copy = str(tmp_path / 'copy')
  shutil.copytree(trained_workdir, copy)
  shutil.copytree(
    os.path.join(copy, 'checkpoints', '6'), os.path.join(copy, 'checkpoints_best', '6')
  )
  best = restore.load(copy, 'best')
  assert best.step == 6 and 'checkpoints_best' in best.checkpoint
  latest = restore.load(copy)
  for a, b in zip(
    *(restore.jax.tree_util.tree_leaves(r.params) for r in (best, latest))
  ):
    np.testing.assert_array_equal(a, b)


def test_config_comes_back_with_tuples(trained_workdir):
  config = restore.load_config(trained_workdir)
  assert config.image_size == (32, 32) and config.num_filters == 4


def test_missing_pieces_are_clear_user_errors(trained_workdir, tmp_path):
  with pytest.raises(UserError, match='is not a folder'):
    restore.load(str(tmp_path / 'nowhere'))
  with pytest.raises(UserError, match='config.json is missing'):
    restore.load(str(tmp_path))
  shutil.copy(os.path.join(trained_workdir, 'config.json'), tmp_path)
  with pytest.raises(UserError, match='No checkpoint in'):
    restore.load(str(tmp_path))
  (tmp_path / 'config.json').write_text('{"model": "unet"')
  with pytest.raises(UserError, match='Cannot read'):
    restore.load(str(tmp_path))


def test_checkpoint_of_another_config_is_refused(trained_workdir, tmp_path):
  copy = str(tmp_path / 'copy')
  shutil.copytree(trained_workdir, copy)
  with open(os.path.join(copy, 'config.json')) as f:
    config = json.load(f)
  config['num_filters'] = 8
  with open(os.path.join(copy, 'config.json'), 'w') as f:
    json.dump(config, f)
  with pytest.raises(UserError, match='does not fit the model of config.json'):
    restore.load(copy)


def test_spacing_flag():
  assert evaluate.parse_spacing('0.5') == (0.5, 0.5)
  assert evaluate.parse_spacing('0.5,2') == (0.5, 2.0)
  assert evaluate.parse_spacing(None) is None
  with pytest.raises(UserError, match='--spacing=-1'):
    evaluate.parse_spacing('-1')


def leaves(tree, prefix=()):
  """{path: value} of every leaf of nested dicts and lists."""
  if isinstance(tree, dict):
    items = tree.items()
  elif isinstance(tree, list):
    items = enumerate(tree)
  else:
    return {prefix: tree}
  return {k: v for key, sub in items for k, v in leaves(sub, (*prefix, key)).items()}


def test_two_processes_write_the_reports_of_one(trained_workdir, evaluated, tmp_path):
  import sys  # noqa: PLC0415

  import two_processes  # noqa: PLC0415

  out = str(tmp_path / 'two')
  outputs = two_processes.run_two_processes(
    [
      sys.executable,
      '-m',
      'sharp_unet_jax.evaluate',
      f'--workdir={trained_workdir}',
      f'--output_dir={out}',
      '--num_worst=3',
    ]
  )
  assert 'Reports:' in outputs[0][0] and 'Reports:' not in outputs[1][0]
  one = os.path.join(trained_workdir, 'eval_test')
  assert read_rows(os.path.join(out, 'per_image.csv')) == read_rows(
    os.path.join(one, 'per_image.csv')
  )
  with open(os.path.join(out, 'summary.json')) as f:
    two_summary = json.load(f)
  with open(os.path.join(one, 'summary.json')) as f:
    one_summary = json.load(f)
  two_leaves, one_leaves = leaves(two_summary), leaves(one_summary)
  assert two_leaves.keys() == one_leaves.keys()
  for key, value in one_leaves.items():
    if isinstance(value, float):
      assert two_leaves[key] == pytest.approx(value, abs=1e-6, rel=0), key
    else:
      assert two_leaves[key] == value, key
  assert sorted(os.listdir(os.path.join(out, 'worst'))) == sorted(
    os.listdir(os.path.join(one, 'worst'))
  )


def test_evaluate_leaves_a_class_absent_from_both_out_of_the_image_mean():
  # Classes 1 and 2 overlap by hand-counted pixels, class 3 is absent from
  # truth and prediction: class 1 Dice 6/7, class 2 Dice 6/8.
  truth = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]])
  pred = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 2, 2], [0, 2, 2, 0]])
  examples = {'mask': truth[None], 'id': [b'slice']}
  probabilities = np.eye(4)[pred][None]

  def scored(rule):
    rows = evaluate.score_images(
      [0], examples, pred[None], probabilities, 4, None, rule
    )
    return rows[0], split_summary.summarize(rows, 4, None, rule)

  row, summary = scored('skip_absent')
  assert row['dice'] == pytest.approx((6 / 7 + 6 / 8) / 2)
  assert row['paper_dice'] == pytest.approx(100 * (6 / 7 + 6 / 8) / 2)
  assert summary['classes_left_out'] == 1
  old_row, old_summary = scored('count_absent')
  assert old_row['dice'] == pytest.approx((6 / 7 + 6 / 8 + 1) / 3)
  assert old_summary['classes_left_out'] == 0
  # Pooled scores do not depend on the rule; class 3, absent from the whole
  # split, is left out of them (class 1: 2 x 3 / (3 + 4); class 2: 2 x 3 / 8).
  assert summary['pooled'] == old_summary['pooled']
  assert summary['pooled']['dice'] == pytest.approx((6 / 7 + 6 / 8) / 2)
  assert summary['pooled']['classes_absent_from_split'] == 1
  with pytest.raises(UserError, match='--absent_classes=average'):
    evaluate.evaluate('unused', absent_classes='average')
