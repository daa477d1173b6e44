"""Pixel-wise segmentation losses on logits.

All losses take logits (N, H, W, K) and integer label maps (N, H, W) or
(N, H, W, 1), and an optional per-pixel weight map (N, H, W) that also masks
out padded examples (weight 0). K = 1 means binary segmentation with sigmoid
logits; K > 1 means softmax over K classes.
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

LossFn = Callable[..., jax.Array]


def _labels_2d(labels: jax.Array) -> jax.Array:
  """Drops a trailing channel axis of size 1 from a label map."""
  if labels.ndim == 4:
    labels = labels[..., 0]
  return labels.astype(jnp.int32)


def _weighted_mean(values: jax.Array, weights: Optional[jax.Array]) -> jax.Array:
  if weights is None:
    return jnp.mean(values)
  weights = jnp.broadcast_to(weights, values.shape)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-8)


def _at_label(values: jax.Array, labels: jax.Array) -> jax.Array:
  """values[n, h, w, labels[n, h, w]], (N, H, W), for labels in 0..K-1.

  Picked by comparing the class index with the label, elementwise, not by a
  gather: the same values for labels in range (a label outside picks
  nothing, 0; the data sources reject such labels), and a gradient that
  keeps the batch's sharding.
  (JAX 0.12 cannot transpose the gather of `take_along_axis(...)[..., 0]`
  over a batch on an Explicit mesh axis: it asks for the scatter's
  out_sharding.)
  """
  if labels.shape != values.shape[:-1]:
    raise ValueError(f'Labels {labels.shape} do not match values {values.shape}.')
  classes = jnp.arange(values.shape[-1])
  return jnp.sum(jnp.where(labels[..., None] == classes, values, 0), axis=-1)


def probabilities(logits: jax.Array) -> jax.Array:
  """Per-class probabilities (N, H, W, K'); K' = 2 for a binary head."""
  if logits.shape[-1] == 1:
    foreground = jax.nn.sigmoid(logits)
    return jnp.concatenate([1.0 - foreground, foreground], axis=-1)
  return jax.nn.softmax(logits, axis=-1)


def cross_entropy_per_pixel(logits, labels) -> jax.Array:
  """Binary (K = 1) or categorical (K > 1) cross-entropy of each pixel (N, H, W)."""
  labels = _labels_2d(labels)
  if logits.shape[-1] == 1:
    return optax.sigmoid_binary_cross_entropy(
      logits[..., 0], labels.astype(logits.dtype)
    )
  return jax.nn.logsumexp(logits, axis=-1) - _at_label(logits, labels)


def cross_entropy(logits, labels, weights=None) -> jax.Array:
  """Mean binary (K = 1) or categorical (K > 1) cross-entropy, the paper's loss."""
  return _weighted_mean(cross_entropy_per_pixel(logits, labels), weights)


def focal_per_pixel(logits, labels, gamma: float = 2.0) -> jax.Array:
  """The focal loss of each pixel (N, H, W); see focal."""
  labels = _labels_2d(labels)
  if logits.shape[-1] == 1:
    return optax.sigmoid_focal_loss(
      logits[..., 0], labels.astype(logits.dtype), alpha=None, gamma=gamma
    )
  log_p = jax.nn.log_softmax(logits, axis=-1)
  log_p_true = _at_label(log_p, labels)
  return -((1.0 - jnp.exp(log_p_true)) ** gamma) * log_p_true


def focal(logits, labels, weights=None, gamma: float = 2.0) -> jax.Array:
  """Mean focal loss (Lin et al. 2017): -(1 - p_t)**gamma * log(p_t), no alpha.

  p_t is the probability given to the true class: sigmoid for K = 1, softmax
  for K > 1. gamma = 0 gives the cross-entropy back; larger gamma down-weights
  pixels the model already gets right.
  """
  return _weighted_mean(focal_per_pixel(logits, labels, gamma), weights)


def soft_dice(logits, labels, weights=None, smooth: float = 1.0) -> jax.Array:
  """1 - soft Dice, averaged over the foreground classes.

  Sums run over the whole batch (as the paper's training metric does), with
  `smooth` added to numerator and denominator so empty masks are defined.
  """
  labels = _labels_2d(labels)
  probs = probabilities(logits)
  num_classes = probs.shape[-1]
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=probs.dtype)
  if weights is not None:
    probs = probs * weights[..., None]
    one_hot = one_hot * weights[..., None]
  axes = (0, 1, 2)
  intersection = jnp.sum(probs * one_hot, axis=axes)[1:]
  total = jnp.sum(probs + one_hot, axis=axes)[1:]
  dice = (2.0 * intersection + smooth) / (total + smooth)
  return 1.0 - jnp.mean(dice)


def cross_entropy_dice(logits, labels, weights=None) -> jax.Array:
  """Cross-entropy plus soft Dice loss."""
  return cross_entropy(logits, labels, weights) + soft_dice(logits, labels, weights)


# The losses that are a mean over pixels, and their per-pixel values: an
# evaluation step sums those in the same pass as its overlap counts.
PER_PIXEL = {cross_entropy: cross_entropy_per_pixel, focal: focal_per_pixel}

LOSSES = {
  'cross_entropy': cross_entropy,
  'dice': soft_dice,
  'cross_entropy_dice': cross_entropy_dice,
  'focal': focal,
}


def get_loss(name: str) -> LossFn:
  """Returns the loss function called `name` (a key of LOSSES).

  Raises:
    ValueError: for an unknown name.
  """
  if name not in LOSSES:
    raise ValueError(f'config.loss={name!r} is unknown; use one of {sorted(LOSSES)}.')
  return LOSSES[name]
