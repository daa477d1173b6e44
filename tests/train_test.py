"""End-to-end training on 4 simulated CPU devices: results, resume, bad input."""

import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from sharp_unet_jax import workdirs
from sharp_unet_jax.data import input_pipeline
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.training import checkpointing, train


def restored_params(workdir, config):
  trainer = train.Trainer(config)
  manager = checkpointing.create_manager(workdir)
  state = checkpointing.restore(manager, trainer.initial_state())
  return jax.device_get(state.params), int(state.step)


@pytest.fixture(scope='module')
def straight(tfds_dir, tmp_path_factory):
  """configs/tiny.py trained for its 6 steps: (config, workdir, results)."""
  from configs import tiny  # noqa: PLC0415

  config = tiny.get_config()
  config.data_dir = tfds_dir
  workdir = str(tmp_path_factory.mktemp('straight'))
  return config, workdir, train.train_and_evaluate(config, workdir)


def test_end_to_end_writes_results_checkpoints_and_summaries(straight):
  tiny_config, workdir, results = straight
  with open(os.path.join(workdir, 'test_metrics.json')) as f:
    saved = json.load(f)
  for key in ('dice', 'iou', 'dice_per_image', 'iou_per_image'):
    assert saved[key] == pytest.approx(results[key])
  assert saved['step'] == tiny_config.num_train_steps and saved['num_examples'] == 16

  manager = checkpointing.create_manager(workdir)
  assert manager.latest_step() == tiny_config.num_train_steps
  metadata_paths = checkpointing._shapes_by_path(
    manager.item_metadata(manager.latest_step())
  )
  assert metadata_paths and not any('sharp' in path for path in metadata_paths)

  events = glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  assert events
  accumulator = event_accumulator.EventAccumulator(
    events[0], size_guidance={'tensors': 0}
  )
  accumulator.Reload()
  tags = accumulator.Tags()['tensors']
  for tag in ('train/loss', 'eval/dice', 'eval/iou_per_image', 'eval/overlays'):
    assert tag in tags
  eval_steps = [event.step for event in accumulator.Tensors('eval/dice')]
  assert eval_steps == [3, 6]


def test_a_few_dozen_steps_learn_the_lesions(tiny_config):
  # The untrained tiny model scores about 0.4 Dice on the validation split;
  # 40 steps at this rate reach about 0.9.
  tiny_config.learning_rate = 1e-2
  trainer = train.Trainer(tiny_config)
  train_data = input_pipeline.load_split(tiny_config, tiny_config.train_split)
  eval_data = input_pipeline.load_split(tiny_config, tiny_config.eval_split)
  state = trainer.initial_state()
  untrained = trainer.evaluate(state.params, eval_data)
  for step in range(40):
    batch = input_pipeline.train_batch(train_data, tiny_config, step)
    state, _ = trainer.train_step(state, trainer.global_batch(batch))
  trained = trainer.evaluate(state.params, eval_data)
  assert trained['loss'] < 0.5 * untrained['loss']
  assert trained['dice'] > untrained['dice'] + 0.3


def test_resume_continues_and_matches_an_uninterrupted_run(
  straight, tiny_config, tmp_path
):
  _, straight, _ = straight  # the same config, trained without a stop
  resumed = str(tmp_path / 'resumed')
  tiny_config.num_train_steps = 3
  train.train_and_evaluate(tiny_config, resumed)
  assert restored_params(resumed, tiny_config)[1] == 3
  tiny_config.num_train_steps = 6
  results = train.train_and_evaluate(tiny_config, resumed)
  assert results['step'] == 6

  params_straight, _ = restored_params(straight, tiny_config)
  params_resumed, _ = restored_params(resumed, tiny_config)
  for a, b in zip(
    jax.tree_util.tree_leaves(params_straight),
    jax.tree_util.tree_leaves(params_resumed),
  ):
    np.testing.assert_array_equal(a, b)


def test_checkpoint_of_another_model_config_fails_clearly(straight, tmp_path):
  config, trained, _ = straight
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  tiny_config = config.copy_and_resolve_references()
  tiny_config.num_filters = 8
  with pytest.raises(UserError, match='written by a different model config'):
    train.train_and_evaluate(tiny_config, workdir)


def test_batch_not_divisible_by_devices_fails_clearly(tiny_config, tmp_path):
  tiny_config.batch_size = 6
  with pytest.raises(
    UserError, match=r'config.batch_size=6 must be a positive multiple'
  ):
    train.train_and_evaluate(tiny_config, str(tmp_path))


def test_image_sides_not_divisible_fail_clearly(tiny_config, tmp_path):
  tiny_config.image_size = (30, 32)
  with pytest.raises(UserError, match='divisible by 2\\*\\*depth = 4'):
    train.train_and_evaluate(tiny_config, str(tmp_path))


def test_unwritable_workdir_fails_clearly(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a folder')
  with pytest.raises(UserError, match='is not a writable folder'):
    workdirs.prepare(str(blocker / 'sub'))


def test_cpu_steps_run_one_at_a_time_only_across_processes(tiny_config, monkeypatch):
  """A two-process CPU run hung with the processes' train steps in flight at
  once (train.Trainer); one process keeps JAX's asynchronous dispatch."""
  assert not train.Trainer(tiny_config).one_step_at_a_time
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  assert train.Trainer(tiny_config).one_step_at_a_time
