"""Pure functions of one training or evaluation step, and the initial state."""

import functools
import math

import flax.linen as nn
from flax.training import train_state
import jax

from sharp_unet_jax.data import augment
from sharp_unet_jax.evaluation import metrics
from sharp_unet_jax.model import models
from sharp_unet_jax.training import losses, schedules


def create_train_state(config, model: nn.Module, rng) -> train_state.TrainState:
  """Initial parameters and optimiser state (step 0)."""
  params = models.init_params(model, config, rng)
  return train_state.TrainState.create(
    apply_fn=model.apply, params=params, tx=schedules.make_optimizer(config)
  )


def overlap_outputs(logits, labels, num_classes: int) -> dict:
  """Per-image overlap counts of hard predictions, as metric inputs."""
  intersection, predicted, true = metrics.overlap_counts(
    metrics.hard_predictions(logits), labels, max(num_classes, 2)
  )
  return {'intersection': intersection, 'predicted': predicted, 'true': true}


def train_step(state, batch, *, loss_fn, num_classes, augment_config=None, seed=0):
  """One optimiser update on a global batch; returns the new state and metrics.

  Args:
    state: the train state.
    batch: 'image', 'mask' and optionally 'weights' (per-pixel loss weights).
    loss_fn: a loss of losses.py.
    num_classes: the config's num_classes.
    augment_config: config.augment to augment the batch on device (keyed by
      (seed, state.step)), or None.
    seed: the run's seed (may be traced, e.g. under vmap over seeds).
  """
  if augment_config is not None:
    batch = augment.augment_batch(
      batch, augment.step_key(seed, state.step), augment_config
    )

  def compute_loss(params):
    logits = state.apply_fn({'params': params}, batch['image'])
    return loss_fn(logits, batch['mask'], batch.get('weights')), logits

  (loss, logits), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
  step_metrics = metrics.TrainMetrics.single_from_model_output(
    loss=loss,
    step=state.step + 1,
    **overlap_outputs(logits, batch['mask'], num_classes),
  )
  return state.apply_gradients(grads=grads), step_metrics


def _per_example_loss(loss_fn, logits, labels):
  return jax.vmap(lambda x, y: loss_fn(x[None], y[None]))(logits, labels)


def eval_outputs_per_kind(logits, labels, *, loss_fn, num_classes: int) -> dict:
  """The eval metrics' inputs: the per-example loss and the per-image
  overlap sums, each kind its own reduction. XLA:GPU fuses these into one
  kernel; it does not fuse a variadic reduction with its inputs."""
  soft_intersection, soft_union = metrics.soft_overlap(
    losses.probabilities(logits), labels, max(num_classes, 2)
  )
  return {
    'loss': _per_example_loss(loss_fn, logits, labels),
    'soft_intersection': soft_intersection,
    'soft_union': soft_union,
    **overlap_outputs(logits, labels, num_classes),
  }


def eval_outputs_one_pass(logits, labels, *, loss_fn, num_classes: int) -> dict:
  """eval_outputs_per_kind's values, summed in one variadic reduction over
  the pixels, the loss too when it is a mean over pixels (losses.PER_PIXEL).
  XLA:TPU then reads the logits and labels once, where it gives the
  separate reductions a pass each."""
  per_pixel_loss = losses.PER_PIXEL.get(loss_fn)
  overlaps = metrics.hard_and_soft_overlap(
    metrics.hard_predictions(logits),
    losses.probabilities(logits),
    labels,
    max(num_classes, 2),
    None if per_pixel_loss is None else per_pixel_loss(logits, labels),
  )
  if per_pixel_loss is None:
    loss = _per_example_loss(loss_fn, logits, labels)
  else:
    loss = overlaps.pop('pixel_sum') / math.prod(logits.shape[1:3])
  return {'loss': loss, **overlaps}


def eval_step(params, batch, *, apply_fn, loss_fn, num_classes):
  """Metrics of one padded evaluation batch (padding masked by 'valid').

  Their inputs are summed per image in one pass on TPU
  (eval_outputs_one_pass), kind by kind elsewhere (eval_outputs_per_kind).
  """
  logits = apply_fn({'params': params}, batch['image'])
  kwargs = dict(loss_fn=loss_fn, num_classes=num_classes)
  outputs = jax.lax.platform_dependent(
    logits,
    batch['mask'],
    tpu=functools.partial(eval_outputs_one_pass, **kwargs),
    default=functools.partial(eval_outputs_per_kind, **kwargs),
  )
  return metrics.EvalMetrics.single_from_model_output(mask=batch['valid'], **outputs)
