"""What the Sharp U-Net paper's test metric computed, per data set.

The authors' evaluation loop (the reference notebooks, see PAPER.md) scores
each test image as sum(y p) / sum(y + p - y p) (Jaccard) and
2 sum(y p) / (sum y + sum p) (Dice) over the image's flattened arrays, then
averages over images, x 100. What y and p are differs by data set:

- binary sets (lung_ct, dsb2018, isic2018, isbi2012, cvc_clinicdb, and any
  other binary set): p is the sigmoid output rounded (np.round: > 0.5), y the
  0/1 mask, one channel: HARD_FOREGROUND, per_image_metrics.paper_scores.
- covid19_ct: the rounding line is commented out, so p is the softmax output
  (soft probabilities) and y the 4-channel one-hot truth, background
  included: SOFT_ONE_HOT. Because softmax rows and one-hot rows each sum to
  1, sum p = sum y = the pixel count, and Dice is the mean probability given
  to each pixel's true class; the background dominates it.

The reference divides 0 by 0 (NaN) for an image where truth and prediction
are both empty; here such an image scores 1 (per_image_metrics' policy),
which changes nothing on data sets whose test images all hold a mask.
"""

import numpy as np

from sharp_unet_jax.evaluation import overlap, per_image_metrics

HARD_FOREGROUND = 'hard_foreground'
SOFT_ONE_HOT = 'soft_one_hot'

DESCRIPTIONS = {
  HARD_FOREGROUND: (
    'probabilities thresholded at 0.5 per foreground class, hard per-image '
    'Jaccard and Dice, mean over images'
  ),
  SOFT_ONE_HOT: (
    'soft probabilities against the one-hot truth of all classes, background '
    'included, per image over the flattened channels, mean over images'
  ),
}

# Data sets whose paper metric is not HARD_FOREGROUND (TFDS names).
_PROTOCOLS = {'covid19_ct': SOFT_ONE_HOT}


def for_dataset(dataset: str) -> str:
  """The paper protocol of a TFDS data set name ('name[/config][:version]')."""
  return _PROTOCOLS.get(dataset.split('/')[0].split(':')[0], HARD_FOREGROUND)


def soft_one_hot_scores(probabilities, true_labels, num_classes: int) -> tuple:
  """The paper's COVID-19 per-image Jaccard and Dice, in percent.

  Args:
    probabilities: (H, W, K) softmax probabilities, K = num_classes >= 2.
    true_labels: (H, W) true class indices in [0, K).
    num_classes: K.

  Returns:
    (jaccard, dice) x 100, over all K channels at once.

  Raises:
    ValueError: for a binary (num_classes 1) model or mismatched shapes.
  """
  probabilities = np.asarray(probabilities, np.float64)
  if num_classes < 2 or probabilities.shape[-1] != num_classes:
    raise ValueError(
      f'The soft one-hot protocol needs K >= 2 softmax channels, got '
      f'num_classes={num_classes} and probabilities {probabilities.shape}.'
    )
  one_hot = np.eye(num_classes)[np.asarray(true_labels, np.int64)]
  if one_hot.shape != probabilities.shape:
    raise ValueError(f'Truth {one_hot.shape} does not match {probabilities.shape}.')
  found = (np.sum(one_hot * probabilities), np.sum(probabilities), np.sum(one_hot))
  return 100.0 * float(overlap.iou(*found)), 100.0 * float(overlap.dice(*found))


def scores(
  protocol: str,
  probabilities,
  true_labels,
  num_classes: int,
  rule: str = per_image_metrics.SKIP_ABSENT,
) -> tuple:
  """One image's (jaccard, dice) x 100 under a paper protocol.

  Args:
    protocol: HARD_FOREGROUND or SOFT_ONE_HOT (for_dataset).
    probabilities: (H, W, 1) sigmoid or (H, W, K) softmax probabilities.
    true_labels: (H, W) true class indices.
    num_classes: the model's num_classes.
    rule: the absent-class rule of HARD_FOREGROUND with several classes.

  Raises:
    ValueError: for an unknown protocol.
  """
  if protocol == HARD_FOREGROUND:
    return per_image_metrics.paper_scores(probabilities, true_labels, num_classes, rule)
  if protocol == SOFT_ONE_HOT:
    return soft_one_hot_scores(probabilities, true_labels, num_classes)
  raise ValueError(
    f'Unknown paper protocol {protocol!r}; use one of {list(DESCRIPTIONS)}.'
  )
