"""Dice and IoU: the one definition of each, from overlap counts.

Every score of the project is one of these two, from the counts of one
image (per-image scores) or from counts summed over images (pooled scores):
the clu metrics of training (metrics.py, in JAX), the per-image and pooled
scores of a split (per_image_metrics.py, split_summary.py), the paper's
protocols (paper_protocol.py) and the Otsu baseline (baselines.py).
`xp` is the array module the counts live in: NumPy (the default) or
jax.numpy, so that the same formula runs inside a jitted step.
"""

import numpy as np


def counts(pred, true) -> tuple[int, int, int]:
  """(|P∩T|, |P|, |T|) of two boolean masks of one shape."""
  pred, true = np.asarray(pred, bool), np.asarray(true, bool)
  return (
    int(np.count_nonzero(pred & true)),
    int(np.count_nonzero(pred)),
    int(np.count_nonzero(true)),
  )


def dice(intersection, predicted, true, xp=np):
  """Dice = 2|P∩T| / (|P| + |T|); 1 where both sets are empty.

  Counts may be soft (sums of probabilities); arrays score elementwise.
  """
  total = predicted + true
  return xp.where(total > 0, 2.0 * intersection / xp.where(total > 0, total, 1), 1.0)


def iou(intersection, predicted, true, xp=np):
  """IoU (Jaccard) = |P∩T| / |P∪T|; 1 where both sets are empty."""
  union = predicted + true - intersection
  return xp.where(union > 0, intersection / xp.where(union > 0, union, 1), 1.0)
