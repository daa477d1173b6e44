"""Segmentation metrics: hard Dice and IoU, two ways, as clu metrics.

Predictions are hard labels: logit > 0 (probability > 0.5) for a binary head,
argmax for a K-class head. Scores are computed per foreground class (class 0,
the background, is left out) and averaged over those classes.

Two aggregations are offered, as papers report both:
- dataset level ("pooled"): intersections and sizes are summed over all images
  first, so the score is exact however the data is batched;
- per image (the Sharp U-Net paper's way): each image gets its own score and
  the scores are averaged over images.

Empty masks: when an image has neither a true nor a predicted foreground pixel
of a class, its Dice and IoU for that class are 1 (a perfect "nothing there");
when exactly one of them is empty, they are 0. An image's per-image score
averages only the classes present in its truth or prediction (an absent class
would raise every such image's score); an image with no class present scores
1. The pooled scores follow the same rule over the whole data set: a class
with no true and no predicted pixel in any image is left out of the mean
over classes (it would score 1); if every class is absent, the score is 1.
"""

import functools
from typing import Optional

from clu import metrics
import flax
import jax
import jax.numpy as jnp

from sharp_unet_jax.evaluation import overlap


def hard_predictions(logits: jax.Array) -> jax.Array:
  """Class indices (N, H, W): sigmoid > 0.5 for one channel, argmax otherwise."""
  if logits.shape[-1] == 1:
    return (logits[..., 0] > 0).astype(jnp.int32)
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def overlap_counts(predictions, labels, num_classes: int):
  """Per-image, per-foreground-class pixel counts.

  Args:
    predictions: int class indices (N, H, W).
    labels: int class indices (N, H, W) or (N, H, W, 1).
    num_classes: K including background (2 for a binary head).

  Returns:
    (intersection, predicted, true), each float32 of shape (N, K - 1).
  """
  if labels.ndim == 4:
    labels = labels[..., 0]
  classes = jnp.arange(1, num_classes)
  pred = predictions[..., None] == classes
  true = labels.astype(jnp.int32)[..., None] == classes
  axes = (1, 2)
  intersection = jnp.sum(pred & true, axis=axes, dtype=jnp.float32)
  return (
    intersection,
    jnp.sum(pred, axis=axes, dtype=jnp.float32),
    jnp.sum(true, axis=axes, dtype=jnp.float32),
  )


def soft_overlap(probabilities, labels, num_classes: int):
  """Per-image soft overlap of probabilities with one-hot labels, per class.

  The paper's validation soft Jaccard (Keras `jacard`) is
  sum(y p) / sum(y + p - y p); this returns its numerator and denominator per
  image and foreground class, so they can be summed over a whole split.

  Args:
    probabilities: (N, H, W, K') class probabilities, K' = max(num_classes, 2).
    labels: int class indices (N, H, W) or (N, H, W, 1).
    num_classes: K including background (2 for a binary head).

  Returns:
    (soft_intersection, soft_union), each float32 of shape (N, K - 1).
  """
  if labels.ndim == 4:
    labels = labels[..., 0]
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)[..., 1:]
  probs = probabilities[..., 1:].astype(jnp.float32)
  axes = (1, 2)
  intersection = jnp.sum(one_hot * probs, axis=axes)
  return intersection, jnp.sum(one_hot + probs, axis=axes) - intersection


def hard_and_soft_overlap(
  predictions, probabilities, labels, num_classes: int, pixel_values=None
):
  """overlap_counts and soft_overlap of one batch in a single pass.

  All the per-image sums are one (variadic) reduction, so a compiled
  evaluation step reads the logits and labels once for all of them rather
  than once per kind.

  Args:
    predictions: int class indices (N, H, W).
    probabilities: (N, H, W, K') class probabilities, K' = max(num_classes, 2).
    labels: int class indices (N, H, W) or (N, H, W, 1).
    num_classes: K including background (2 for a binary head).
    pixel_values: optional (N, H, W) values (a per-pixel loss) to sum per
      image in the same pass.

  Returns:
    {'intersection', 'predicted', 'true'} (overlap_counts) and
    {'soft_intersection', 'soft_union'} (soft_overlap), each float32 of shape
    (N, K - 1); with pixel_values, also their per-image sums 'pixel_sum' (N,).
  """
  if labels.ndim == 4:
    labels = labels[..., 0]
  classes = jnp.arange(1, num_classes)
  pred = (predictions[..., None] == classes).astype(jnp.float32)
  true = (labels.astype(jnp.int32)[..., None] == classes).astype(jnp.float32)
  probs = probabilities[..., 1:].astype(jnp.float32)
  terms = [pred * true, pred, true, true * probs, probs]
  if pixel_values is not None:
    # Every operand of one reduction has the same shape: repeated per class.
    terms.append(jnp.broadcast_to(pixel_values[..., None], pred.shape))
  sums = jax.lax.reduce(
    tuple(terms),
    (jnp.float32(0),) * len(terms),
    lambda a, b: tuple(x + y for x, y in zip(a, b)),
    dimensions=(1, 2),
  )
  intersection, predicted, true_sum, soft_intersection, probs_sum = sums[:5]
  result = {
    'intersection': intersection,
    'predicted': predicted,
    'true': true_sum,
    'soft_intersection': soft_intersection,
    'soft_union': true_sum + probs_sum - soft_intersection,
  }
  if pixel_values is not None:
    result['pixel_sum'] = sums[5][:, 0]
  return result


# overlap.py's Dice and IoU on JAX arrays.
dice_from_counts = functools.partial(overlap.dice, xp=jnp)
iou_from_counts = functools.partial(overlap.iou, xp=jnp)


def _masked_sum(values, mask: Optional[jax.Array]):
  """Sums (N, ...) values over N, counting only examples where mask is true."""
  if mask is not None:
    values = values * mask.reshape((-1,) + (1,) * (values.ndim - 1))
  return jnp.sum(values, axis=0)


@flax.struct.dataclass
class PooledOverlap(metrics.Metric):
  """Intersection and sizes per class summed over all images."""

  intersection: jax.Array
  predicted: jax.Array
  true: jax.Array

  @classmethod
  def from_model_output(cls, intersection, predicted, true, mask=None, **_):
    return cls(
      _masked_sum(intersection, mask),
      _masked_sum(predicted, mask),
      _masked_sum(true, mask),
    )

  def merge(self, other):
    return type(self)(
      self.intersection + other.intersection,
      self.predicted + other.predicted,
      self.true + other.true,
    )

  @classmethod
  def empty(cls):
    return cls(jnp.zeros(()), jnp.zeros(()), jnp.zeros(()))


@flax.struct.dataclass
class PooledDice(PooledOverlap):
  """Dataset-level Dice, averaged over the foreground classes present."""

  def compute(self):
    scores = dice_from_counts(self.intersection, self.predicted, self.true)
    return present_class_mean(scores, self.predicted, self.true)


@flax.struct.dataclass
class PooledIoU(PooledOverlap):
  """Dataset-level IoU (Jaccard), averaged over the foreground classes present."""

  def compute(self):
    scores = iou_from_counts(self.intersection, self.predicted, self.true)
    return present_class_mean(scores, self.predicted, self.true)


@flax.struct.dataclass
class PooledSoftIoU(metrics.Metric):
  """Dataset-level soft Jaccard (the paper's validation metric), over classes."""

  soft_intersection: jax.Array
  soft_union: jax.Array

  @classmethod
  def from_model_output(cls, soft_intersection=None, soft_union=None, mask=None, **_):
    if soft_intersection is None:  # Callers that pass hard counts only.
      return cls.empty()
    return cls(_masked_sum(soft_intersection, mask), _masked_sum(soft_union, mask))

  def merge(self, other):
    return type(self)(
      self.soft_intersection + other.soft_intersection,
      self.soft_union + other.soft_union,
    )

  @classmethod
  def empty(cls):
    return cls(jnp.zeros(()), jnp.zeros(()))

  def compute(self):
    union = self.soft_union
    return jnp.mean(
      jnp.where(union > 0, self.soft_intersection / jnp.maximum(union, 1e-12), 1.0)
    )


def present_class_mean(scores, predicted, true):
  """Mean over the last (class) axis of the classes with a pixel; 1 if none.

  A class with neither a true nor a predicted pixel says nothing and is left
  out; where every class is absent the result is 1 (nothing to find, nothing
  found). With one foreground class this is the plain score.

  Args:
    scores: (..., K - 1) per-class scores.
    predicted: (..., K - 1) predicted pixel counts.
    true: (..., K - 1) true pixel counts.

  Returns:
    (...) means.
  """
  present = (predicted + true) > 0
  kept = jnp.sum(jnp.where(present, scores, 0.0), axis=-1)
  count = jnp.sum(present, axis=-1)
  return jnp.where(count > 0, kept / jnp.maximum(count, 1), 1.0)


@flax.struct.dataclass
class _PerImageScore(metrics.Average):
  """Mean over images of a per-image score: each image's mean over its
  foreground classes, absent classes left out (present_class_mean)."""

  @staticmethod
  def score(intersection, predicted, true):
    raise NotImplementedError

  @classmethod
  def from_model_output(cls, intersection, predicted, true, mask=None, **_):
    scores = cls.score(intersection, predicted, true)
    per_image = present_class_mean(scores, predicted, true)
    return super().from_model_output(per_image, mask=mask)


@flax.struct.dataclass
class PerImageDice(_PerImageScore):
  """Mean over images of each image's Dice (mean of its present classes)."""

  score = staticmethod(dice_from_counts)


@flax.struct.dataclass
class PerImageIoU(_PerImageScore):
  """Mean over images of each image's IoU (mean of its present classes)."""

  score = staticmethod(iou_from_counts)


@flax.struct.dataclass
class FirstNonFiniteStep(metrics.Metric):
  """The earliest step whose loss was NaN or infinite (inf if none was)."""

  step: jax.Array

  @classmethod
  def from_model_output(cls, loss, step, **_):
    return cls(jnp.where(jnp.isfinite(loss), jnp.inf, step.astype(jnp.float32)))

  def merge(self, other):
    return type(self)(jnp.minimum(self.step, other.step))

  @classmethod
  def empty(cls):
    return cls(jnp.array(jnp.inf))

  def compute(self):
    return self.step


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  """Metrics logged during training (batch loss, pooled overlap on the batch)."""

  loss: metrics.Average.from_output('loss')
  dice: PooledDice
  iou: PooledIoU
  first_nonfinite_step: FirstNonFiniteStep


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  """Metrics of an evaluation pass; padded examples are masked out."""

  loss: metrics.Average.from_output('loss')
  dice: PooledDice
  iou: PooledIoU
  dice_per_image: PerImageDice
  iou_per_image: PerImageIoU
  soft_iou: PooledSoftIoU
