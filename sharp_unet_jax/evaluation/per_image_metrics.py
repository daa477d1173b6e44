"""Per-image, per-class overlap and boundary scores in numpy/scipy.

For each foreground class (class 0, the background, is left out) of one image:
Dice, IoU (Jaccard), precision, recall and HD95.

HD95 is the 95th percentile of the symmetric boundary distances: the distance
from every boundary pixel of the prediction to the nearest boundary pixel of
the truth, and from every boundary pixel of the truth to the nearest boundary
pixel of the prediction, pooled into one set, every pixel counting once. This
is medpy's `hd95` (medpy.metric.binary, connectivity 1). It is not DeepMind's
`surface_distance.compute_robust_hausdorff`, which weights each surface
element by its area and takes the percentile of each direction separately,
reporting the larger; the two differ on irregular or unequal boundaries.
A boundary pixel is a mask pixel with a 4-neighbour outside the mask (pixels
on the image edge count as boundary, as in medpy). Distances are Euclidean between pixel
centres, in pixels, or in the units of `spacing` (e.g. mm per pixel along
rows and columns).

Empty masks follow one policy, never giving NaN:
- both empty ('both_empty'): Dice, IoU, precision and recall are 1, HD95 is 0;
- only the prediction empty ('pred_empty', a missed object) or only the truth
  empty ('true_empty', a false detection): Dice, IoU, precision and recall
  are 0 and HD95 is the image diagonal (the largest possible error).
Precision with an empty prediction and recall with an empty truth follow the
same rule. Each case is recorded so that summaries can count it.

Averaged over the classes of one image (several foreground classes), a class
absent from both truth and prediction is left out by default (SKIP_ABSENT):
its perfect 1 would raise every image that lacks the class. COUNT_ABSENT
keeps the paper code's rule (every class averaged).
"""

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from sharp_unet_jax.evaluation import overlap

BOTH_EMPTY = 'both_empty'
PRED_EMPTY = 'pred_empty'
TRUE_EMPTY = 'true_empty'
EMPTY_CASES = (BOTH_EMPTY, PRED_EMPTY, TRUE_EMPTY)

SCORE_NAMES = ('dice', 'iou', 'precision', 'recall', 'hd95')

# Rules for a class absent from both truth and prediction in an image, when
# an image's scores are averaged over classes (mean_over_classes).
SKIP_ABSENT = 'skip_absent'
COUNT_ABSENT = 'count_absent'
ABSENT_RULES = (SKIP_ABSENT, COUNT_ABSENT)

# 4-connectivity: a pixel is on the boundary if one of its 4 neighbours is not.
_CROSS = ndimage.generate_binary_structure(2, 1)


@dataclasses.dataclass(frozen=True)
class ClassScores:
  """Scores of one foreground class in one image.

  Attributes:
    dice: 2|P∩T| / (|P| + |T|).
    iou: |P∩T| / |P∪T|.
    precision: |P∩T| / |P|.
    recall: |P∩T| / |T|.
    hd95: 95th-percentile symmetric boundary distance.
    intersection: |P∩T| in pixels.
    predicted: |P| in pixels.
    true: |T| in pixels.
    empty_case: '' when both masks have pixels, else one of EMPTY_CASES.
  """

  dice: float
  iou: float
  precision: float
  recall: float
  hd95: float
  intersection: int
  predicted: int
  true: int
  empty_case: str


def _spacing(spacing: Optional[Sequence[float]]) -> tuple[float, float]:
  if spacing is None:
    return 1.0, 1.0
  rows, cols = (float(s) for s in spacing)
  if not (rows > 0 and cols > 0):
    raise ValueError(f'spacing must be two positive numbers, got {spacing}.')
  return rows, cols


def diagonal(shape: Sequence[int], spacing: Optional[Sequence[float]] = None) -> float:
  """Length of the image diagonal, in the units of `spacing`."""
  rows, cols = _spacing(spacing)
  return math.hypot(shape[0] * rows, shape[1] * cols)


def boundary(mask: np.ndarray) -> np.ndarray:
  """Pixels of a boolean mask that have a 4-neighbour outside it."""
  mask = np.asarray(mask, bool)
  return mask & ~ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)


def surface_distances(
  pred: np.ndarray, true: np.ndarray, spacing: Optional[Sequence[float]] = None
) -> np.ndarray:
  """Symmetric boundary distances between two non-empty boolean masks.

  Returns:
    1-D float array: for each boundary pixel of `pred` the distance to the
    nearest boundary pixel of `true`, followed by the same from `true` to
    `pred`.
  """
  sampling = _spacing(spacing)
  pred_edge, true_edge = boundary(pred), boundary(true)
  to_true = ndimage.distance_transform_edt(~true_edge, sampling=sampling)
  to_pred = ndimage.distance_transform_edt(~pred_edge, sampling=sampling)
  return np.concatenate([to_true[pred_edge], to_pred[true_edge]])


def hd95(
  pred: np.ndarray, true: np.ndarray, spacing: Optional[Sequence[float]] = None
) -> float:
  """95th-percentile symmetric Hausdorff distance, with the empty-mask policy."""
  pred, true = np.asarray(pred, bool), np.asarray(true, bool)
  has_pred, has_true = bool(pred.any()), bool(true.any())
  if not has_pred and not has_true:
    return 0.0
  if has_pred != has_true:
    return diagonal(pred.shape, spacing)
  return float(np.percentile(surface_distances(pred, true, spacing), 95))


def class_scores(
  pred: np.ndarray, true: np.ndarray, spacing: Optional[Sequence[float]] = None
) -> ClassScores:
  """Scores of one class from boolean prediction and truth masks (H, W)."""
  pred, true = np.asarray(pred, bool), np.asarray(true, bool)
  if pred.shape != true.shape or pred.ndim != 2:
    raise ValueError(f'Masks must be 2-D and alike, got {pred.shape}, {true.shape}.')
  intersection, predicted, actual = overlap.counts(pred, true)
  distance = hd95(pred, true, spacing)
  if predicted == 0 or actual == 0:
    if predicted == actual:
      case, score = BOTH_EMPTY, 1.0
    else:
      case, score = (PRED_EMPTY if predicted == 0 else TRUE_EMPTY), 0.0
    return ClassScores(
      score, score, score, score, distance, intersection, predicted, actual, case
    )
  return ClassScores(
    dice=float(overlap.dice(intersection, predicted, actual)),
    iou=float(overlap.iou(intersection, predicted, actual)),
    precision=intersection / predicted,
    recall=intersection / actual,
    hd95=distance,
    intersection=intersection,
    predicted=predicted,
    true=actual,
    empty_case='',
  )


def image_scores(
  pred_labels: np.ndarray,
  true_labels: np.ndarray,
  num_classes: int,
  spacing: Optional[Sequence[float]] = None,
) -> list[ClassScores]:
  """Scores of classes 1..K-1 of one image from class-index maps (H, W).

  Args:
    pred_labels: predicted class indices.
    true_labels: true class indices.
    num_classes: the model's num_classes (1 means binary: classes 0 and 1).
    spacing: optional (row, column) pixel size, e.g. in mm, for HD95.

  Returns:
    One ClassScores per foreground class, class 1 first.
  """
  return [
    class_scores(pred_labels == c, true_labels == c, spacing)
    for c in range(1, max(num_classes, 2))
  ]


def mean_over_classes(values, absent, rule: str = SKIP_ABSENT) -> float:
  """An image's mean of per-class values under the absent-class rule.

  Args:
    values: one value per foreground class.
    absent: one bool per class: neither truth nor prediction has a pixel.
    rule: SKIP_ABSENT (default) leaves absent classes out of the mean, and an
      image where every class is absent keeps the all-class mean (each class
      scores 1, HD95 0); COUNT_ABSENT averages all classes, absent ones
      scoring 1 (the paper code's rule, which raises multi-class scores).

  Raises:
    ValueError: for an unknown rule.
  """
  if rule not in ABSENT_RULES:
    raise ValueError(f'Unknown absent-class rule {rule!r}; use one of {ABSENT_RULES}.')
  values, absent = np.asarray(values, np.float64), np.asarray(absent, bool)
  if rule == SKIP_ABSENT and not absent.all():
    values = values[~absent]
  return float(values.mean())


def paper_class_scores(
  probabilities: np.ndarray, true_labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The paper's per-class hard Jaccard and Dice of one image, and absences.

  Each foreground class's probability is thresholded at 0.5 (one-vs-rest, as
  `np.round` of the network output does) and scored against the truth.

  Args:
    probabilities: (H, W, 1) sigmoid or (H, W, K) softmax probabilities.
    true_labels: (H, W) true class indices.
    num_classes: the model's num_classes.

  Returns:
    (jaccard, dice, absent), one entry per foreground class; a class absent
    from both truth and prediction scores 1.
  """
  jaccards, dices, absent = [], [], []
  for c in range(1, max(num_classes, 2)):
    channel = 0 if num_classes == 1 else c
    found = overlap.counts(probabilities[..., channel] > 0.5, true_labels == c)
    jaccards.append(overlap.iou(*found))
    dices.append(overlap.dice(*found))
    absent.append(found[1] + found[2] == 0)
  return np.array(jaccards), np.array(dices), np.array(absent)


def paper_scores(
  probabilities: np.ndarray,
  true_labels: np.ndarray,
  num_classes: int,
  rule: str = SKIP_ABSENT,
) -> tuple[float, float]:
  """The Sharp U-Net paper's per-image Jaccard and Dice, in percent.

  Per-class scores of `paper_class_scores`, averaged over foreground classes
  with the absent-class `rule` (mean_over_classes).

  Returns:
    (jaccard, dice) x 100.
  """
  jaccard, dice, absent = paper_class_scores(probabilities, true_labels, num_classes)
  return (
    100.0 * mean_over_classes(jaccard, absent, rule),
    100.0 * mean_over_classes(dice, absent, rule),
  )
