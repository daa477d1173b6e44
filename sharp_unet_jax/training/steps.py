"""Pure functions of one training or evaluation step, and the initial state."""

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


def eval_step(params, batch, *, apply_fn, loss_fn, num_classes):
  """Metrics of one padded evaluation batch (padding masked by 'valid').

  The overlap sums, and the loss when it is a mean over pixels
  (losses.PER_PIXEL), are summed per image in one pass over the logits.
  """
  logits = apply_fn({'params': params}, batch['image'])
  per_pixel_loss = losses.PER_PIXEL.get(loss_fn)
  overlaps = metrics.hard_and_soft_overlap(
    metrics.hard_predictions(logits),
    losses.probabilities(logits),
    batch['mask'],
    max(num_classes, 2),
    None if per_pixel_loss is None else per_pixel_loss(logits, batch['mask']),
  )
  if per_pixel_loss is None:
    per_example_loss = jax.vmap(lambda x, y: loss_fn(x[None], y[None]))(
      logits, batch['mask']
    )
  else:  # summed in the overlaps' pass over the pixels
    per_example_loss = overlaps.pop('pixel_sum') / math.prod(logits.shape[1:3])
  return metrics.EvalMetrics.single_from_model_output(
    loss=per_example_loss, mask=batch['valid'], **overlaps
  )
