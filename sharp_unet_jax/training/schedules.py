"""Learning-rate schedules, reduce-on-plateau and early stopping, as optax state.

`config.schedule` picks the learning rate of Adam:

- 'constant': `learning_rate` for all `num_train_steps` steps (the default);
- 'cosine': linear warmup from 0 over `warmup_steps`, then cosine decay to
  `cosine_end_factor * learning_rate` at `num_train_steps`
  (`optax.warmup_cosine_decay_schedule`);
- 'plateau': the paper's Keras ReduceLROnPlateau: the rate is multiplied by
  `plateau_factor` (0.1) when the monitored validation metric has not improved
  by more than `plateau_min_delta` (1e-4, absolute) for `plateau_patience` (10)
  evaluations in a row, down to `plateau_min_lr` (1e-8). This is
  `optax.contrib.reduce_on_plateau`, fed the validation metric (negated when
  it is maximised, since optax minimises) at evaluation time only; train steps
  just apply its current scale.

Early stopping (`config.early_stopping`) ends training after
`early_stopping_patience` (20) evaluations without an improvement of more than
`early_stopping_min_delta`; training then restores the best state.

The monitored metric (`config.monitor_metric`, default 'soft_iou', the
paper's validation soft Jaccard) and all this bookkeeping live in the optimiser
state, as two extra links of the optax chain (`MetricTrackerState` and the
plateau state), so they are saved in every checkpoint together with the
parameters and a resumed run continues them exactly. With the defaults
(constant schedule, no plateau, no early stopping, no best checkpoint) the
optimiser is plain `optax.adam`, so the state is as it always was.
"""

from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from sharp_unet_jax.errors import UserError

SCHEDULES = ('constant', 'cosine', 'plateau')
MODES = ('max', 'min')
# Keys of the evaluation metrics (metrics.EvalMetrics) that can be monitored.
MONITOR_METRICS = ('soft_iou', 'iou', 'iou_per_image', 'dice', 'dice_per_image', 'loss')


class MetricTrackerState(NamedTuple):
  """Best value of the monitored metric so far, for early stopping and 'best'.

  Attributes:
    best_value: the best observed value, negated when the metric is maximised
      (so lower is better); +inf before the first evaluation.
    best_step: the training step of that evaluation (0 before any).
    bad_evals: evaluations since the last improvement.
  """

  best_value: jax.Array
  best_step: jax.Array
  bad_evals: jax.Array


def check_config(config) -> None:
  """Raises UserError for schedule or monitoring settings that cannot work.

  Configs written before these settings existed (no `schedule` key) pass.
  """
  schedule = config.get('schedule', 'constant')
  if schedule not in SCHEDULES:
    raise UserError(
      f'config.schedule={schedule!r} is unknown; use one of {list(SCHEDULES)}.'
    )
  if not uses_monitor(config) and schedule != 'cosine':
    return
  if schedule == 'cosine' and not 0 <= config.warmup_steps < config.num_train_steps:
    raise UserError(
      f'config.warmup_steps={config.warmup_steps} must be in [0, num_train_steps).'
    )
  if not uses_monitor(config):
    return
  if config.monitor_metric not in MONITOR_METRICS:
    raise UserError(
      f'config.monitor_metric={config.monitor_metric!r} is unknown; use one of '
      f'{list(MONITOR_METRICS)}.'
    )
  if config.monitor_mode not in MODES:
    raise UserError(
      f"config.monitor_mode must be 'max' or 'min', got {config.monitor_mode!r}."
    )
  if schedule == 'plateau' and not 0.0 < config.plateau_factor < 1.0:
    raise UserError(f'config.plateau_factor={config.plateau_factor} must be in (0, 1).')
  for key in ('plateau_patience', 'early_stopping_patience'):
    if config[key] <= 0:
      raise UserError(f'config.{key} must be positive, got {config[key]}.')


def uses_monitor(config) -> bool:
  """Whether the monitored validation metric drives anything in this config."""
  return (
    config.get('schedule', 'constant') == 'plateau'
    or bool(config.get('early_stopping', False))
    or bool(config.get('save_best_checkpoint', False))
  )


def keeps_best(config) -> bool:
  """Whether WORKDIR/checkpoints_best is kept (always with early stopping)."""
  return bool(config.get('save_best_checkpoint', False)) or bool(
    config.get('early_stopping', False)
  )


def learning_rate(config) -> Union[float, optax.Schedule]:
  """The base learning rate: a number, or a function of the step for 'cosine'."""
  if config.get('schedule', 'constant') == 'cosine':
    return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=config.learning_rate,
      warmup_steps=config.warmup_steps,
      decay_steps=config.num_train_steps,
      end_value=config.learning_rate * config.cosine_end_factor,
    )
  return config.learning_rate


def metric_tracker() -> optax.GradientTransformation:
  """An optax link that leaves updates alone and holds a MetricTrackerState."""

  def init(params):
    del params
    return MetricTrackerState(
      best_value=jnp.asarray(jnp.inf, jnp.float32),
      best_step=jnp.asarray(0, jnp.int32),
      bad_evals=jnp.asarray(0, jnp.int32),
    )

  def update(updates, state, params=None):
    del params
    return updates, state

  return optax.GradientTransformation(init, update)


def plateau_scaling(config) -> optax.GradientTransformationExtraArgs:
  """optax.contrib.reduce_on_plateau, scaling updates and fed at eval time only.

  A train step calls it without `value` and only multiplies the updates by the
  current scale; `observe` feeds it one validation value per evaluation.
  """
  plateau = optax.contrib.reduce_on_plateau(
    factor=config.plateau_factor,
    patience=config.plateau_patience,
    rtol=0.0,
    atol=config.plateau_min_delta,
    min_scale=config.plateau_min_lr / config.learning_rate,
  )

  def update(updates, state, params=None, *, value=None, **extra_args):
    if value is None:
      return jax.tree.map(lambda g: state.scale * g, updates), state
    return plateau.update(updates, state, params, value=value, **extra_args)

  return optax.GradientTransformationExtraArgs(plateau.init, update)


def make_optimizer(config) -> optax.GradientTransformation:
  """Adam with the paper's hyper-parameters, the schedule and the monitors.

  Plain `optax.adam` when nothing is monitored and the rate is constant;
  otherwise `optax.chain(adam, [plateau scaling], [metric tracker])`.
  """
  adam = optax.adam(
    learning_rate(config), b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps
  )
  if not uses_monitor(config):
    return adam
  links = [adam]
  if config.schedule == 'plateau':
    links.append(plateau_scaling(config))
  links.append(metric_tracker())
  return optax.chain(*links)


def _is_monitor_state(node) -> bool:
  return isinstance(node, (MetricTrackerState, optax.contrib.ReduceLROnPlateauState))


def _find(opt_state, kind) -> Optional[Any]:
  found = [
    node
    for node in jax.tree_util.tree_leaves(opt_state, is_leaf=_is_monitor_state)
    if isinstance(node, kind)
  ]
  return found[0] if found else None


def observe(opt_state, metric, step, *, config):
  """Feeds one validation value to the plateau and the tracker; pure, jittable.

  Args:
    opt_state: the optimiser state of `make_optimizer(config)`.
    metric: the monitored validation metric (a scalar).
    step: the training step of the evaluation.
    config: the training config.

  Returns:
    (new opt_state, improved): `improved` is true when the value is the best
    so far by more than early_stopping_min_delta.
  """
  value = jnp.asarray(metric, jnp.float32)
  if config.monitor_mode == 'max':
    value = -value
  value = jnp.where(jnp.isnan(value), jnp.inf, value)
  tracker = _find(opt_state, MetricTrackerState)
  improved = value < tracker.best_value - config.early_stopping_min_delta
  plateau = plateau_scaling(config) if config.schedule == 'plateau' else None

  def update(node):
    if isinstance(node, MetricTrackerState):
      return MetricTrackerState(
        best_value=jnp.where(improved, value, node.best_value),
        best_step=jnp.where(improved, jnp.asarray(step, jnp.int32), node.best_step),
        bad_evals=jnp.where(improved, 0, node.bad_evals + 1).astype(jnp.int32),
      )
    if isinstance(node, optax.contrib.ReduceLROnPlateauState) and plateau:
      return plateau.update({}, node, value=value)[1]
    return node

  new_state = jax.tree_util.tree_map(update, opt_state, is_leaf=_is_monitor_state)
  return new_state, improved


def should_stop(opt_state, config) -> bool:
  """Whether early stopping has run out of patience (host-side check)."""
  if not config.early_stopping:
    return False
  tracker = _find(opt_state, MetricTrackerState)
  return int(jax.device_get(tracker.bad_evals)) >= config.early_stopping_patience


def current_learning_rate(config, opt_state, step: int) -> float:
  """The learning rate Adam applies at `step`, including the plateau scale."""
  base = learning_rate(config)
  rate = float(base(step)) if callable(base) else float(base)
  plateau = _find(opt_state, optax.contrib.ReduceLROnPlateauState)
  if plateau is not None:
    rate *= float(jax.device_get(plateau.scale))
  return rate
