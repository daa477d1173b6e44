"""Schedules, reduce-on-plateau, early stopping and the best checkpoint."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from sharp_unet_jax.data import input_pipeline
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.training import checkpointing, schedules, train

PARAMS = {'w': jnp.zeros(3)}


def make_config(**overrides):
  config = default.get_config()
  config.update(overrides)
  return config


def observe_all(config, values):
  """Feeds `values` one evaluation at a time; returns the states after each."""
  opt_state = schedules.make_optimizer(config).init(PARAMS)
  observe = jax.jit(lambda s, v, step: schedules.observe(s, v, step, config=config))
  states = []
  for step, value in enumerate(values, start=1):
    opt_state, _ = observe(opt_state, value, step)
    states.append(opt_state)
  return states


def rates(config, states):
  return [schedules.current_learning_rate(config, s, 0) for s in states]


def test_default_optimizer_is_plain_adam():
  config = make_config()
  assert not schedules.uses_monitor(config)
  state = schedules.make_optimizer(config).init(PARAMS)
  expected = optax.adam(1e-3).init(PARAMS)
  assert jax.tree.structure(state) == jax.tree.structure(expected)


def test_plateau_reduces_rate_after_patience_evaluations():
  config = make_config(schedule='plateau', plateau_patience=3)
  # Best 0.6 at the 2nd evaluation; 0.60005 is not better by min_delta 1e-4.
  values = [0.5, 0.6, 0.6, 0.60005, 0.59, 0.59, 0.7]
  got = rates(config, observe_all(config, values))
  assert got == pytest.approx([1e-3] * 4 + [1e-4] * 3)


def test_plateau_minimises_with_mode_min_and_stops_at_min_lr():
  config = make_config(
    schedule='plateau', plateau_patience=1, plateau_min_lr=5e-5, monitor_mode='min'
  )
  got = rates(config, observe_all(config, [1.0, 0.5, 0.7, 0.7, 0.7]))
  assert got == pytest.approx([1e-3, 1e-3, 1e-4, 5e-5, 5e-5])


def test_plateau_scale_applies_to_the_updates():
  config = make_config(schedule='plateau', plateau_patience=1)
  tx = schedules.make_optimizer(config)
  state = observe_all(config, [0.5, 0.4])[-1]
  grads = {'w': jnp.array([1.0, -2.0, 0.5])}
  updates, _ = tx.update(grads, state, PARAMS)
  # Adam's first step moves each weight by lr * sign(g); lr is now 1e-4.
  np.testing.assert_allclose(updates['w'], [-1e-4, 1e-4, -1e-4], rtol=1e-4)


def test_early_stopping_counts_evaluations_since_the_best():
  config = make_config(early_stopping=True, early_stopping_patience=2)
  # An equal value (0.3 again) is no improvement.
  states = observe_all(config, [0.1, 0.3, 0.2, 0.3, 0.29])
  stops = [schedules.should_stop(s, config) for s in states]
  assert stops == [False, False, False, True, True]


def test_cosine_warms_up_then_decays():
  config = make_config(
    schedule='cosine', warmup_steps=10, num_train_steps=110, cosine_end_factor=0.1
  )
  state = schedules.make_optimizer(config).init(PARAMS)
  lr = [schedules.current_learning_rate(config, state, s) for s in (0, 5, 10, 110)]
  assert lr == pytest.approx([0.0, 5e-4, 1e-3, 1e-4])


@pytest.mark.parametrize(
  'overrides, message',
  [
    ({'schedule': 'linear'}, 'config.schedule'),
    ({'early_stopping': True, 'monitor_metric': 'acc'}, 'config.monitor_metric'),
    ({'schedule': 'plateau', 'plateau_factor': 1.5}, 'plateau_factor'),
  ],
)
def test_bad_settings_fail_clearly(overrides, message):
  with pytest.raises(UserError, match=message):
    schedules.check_config(make_config(**overrides))


def test_early_stopping_run_restores_the_best_state(tiny_config, tmp_path):
  config = tiny_config
  config.num_train_steps = 8
  config.eval_every_steps = 1
  config.schedule = 'plateau'
  config.plateau_patience = 1
  config.early_stopping = True
  config.early_stopping_patience = 2
  # Larger loss counts as better: training lowers it, so it stops early.
  config.monitor_metric = 'loss'
  config.monitor_mode = 'max'
  workdir = str(tmp_path)
  results = train.train_and_evaluate(config, workdir)

  best, last = results['step'], results['last_step']
  assert last == best + 2 < 8 and results['checkpoint'] == 'best'
  best_manager = checkpointing.create_manager(workdir, name=checkpointing.BEST)
  assert best_manager.all_steps() == [best]
  manager = checkpointing.create_manager(workdir)
  assert manager.latest_step() == last
  trainer = train.Trainer(config)
  latest = checkpointing.restore(manager, trainer.initial_state())
  assert schedules.current_learning_rate(config, latest.opt_state, last) < 1e-3
  best_state = checkpointing.restore(best_manager, trainer.initial_state())
  assert int(best_state.step) == best
  # The test metrics are those of the best state.
  test = trainer.evaluate(best_state.params, input_pipeline.load_split(config, 'test'))
  assert results['dice'] == pytest.approx(test['dice'])
  # Launching again does not train on past the stop.
  os.remove(os.path.join(workdir, 'test_metrics.json'))
  again = train.train_and_evaluate(config, workdir)
  assert (again['step'], again['last_step']) == (best, last)
  assert checkpointing.create_manager(workdir).latest_step() == last
