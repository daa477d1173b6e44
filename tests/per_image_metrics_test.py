"""Per-image scores: HD95 against brute force, the empty-mask policy, counts."""

import math

import numpy as np
import pytest

from sharp_unet_jax.evaluation import per_image_metrics as pim


def brute_force_boundary(mask):
  """Mask pixels with a 4-neighbour outside the mask (or outside the image)."""
  padded = np.pad(mask, 1, constant_values=False)
  inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
  return mask & ~inner


def brute_force_hd95(pred, true, spacing=(1.0, 1.0)):
  """95th percentile of all-pairs nearest boundary distances, both ways."""
  a = np.argwhere(brute_force_boundary(pred)) * np.asarray(spacing)
  b = np.argwhere(brute_force_boundary(true)) * np.asarray(spacing)
  pairwise = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
  return np.percentile(np.concatenate([pairwise.min(1), pairwise.min(0)]), 95)


def random_mask(rng, shape):
  """A few random rectangles and discs; never empty."""
  yy, xx = np.mgrid[: shape[0], : shape[1]]
  mask = np.zeros(shape, bool)
  for _ in range(rng.integers(1, 4)):
    if rng.random() < 0.5:
      cy, cx, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(1, 5)
      mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    else:
      y0, x0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
      mask[y0 : y0 + rng.integers(1, 8), x0 : x0 + rng.integers(1, 8)] = True
  mask[rng.integers(0, shape[0]), rng.integers(0, shape[1])] = True
  return mask


def test_boundary_of_a_square_is_its_outline():
  mask = np.zeros((7, 8), bool)
  mask[1:6, 2:7] = True
  edge = pim.boundary(mask)
  expected = mask.copy()
  expected[2:5, 3:6] = False
  np.testing.assert_array_equal(edge, expected)
  # Pixels on the image edge count as boundary.
  assert pim.boundary(np.ones((3, 3), bool)).sum() == 8


@pytest.mark.parametrize('spacing', [None, (1.0, 1.0), (0.5, 2.0)])
def test_hd95_matches_brute_force_on_random_small_masks(spacing):
  rng = np.random.default_rng(0 if spacing is None else 1)
  for _ in range(40):
    shape = tuple(rng.integers(6, 20, size=2))
    pred, true = random_mask(rng, shape), random_mask(rng, shape)
    expected = brute_force_hd95(pred, true, spacing or (1.0, 1.0))
    assert pim.hd95(pred, true, spacing) == pytest.approx(expected, abs=1e-9)


def test_hd95_known_values():
  a = np.zeros((10, 10), bool)
  b = np.zeros((10, 10), bool)
  a[1, 1] = True
  b[4, 5] = True
  assert pim.hd95(a, b) == pytest.approx(5.0)
  assert pim.hd95(a, b, spacing=(2.0, 1.0)) == pytest.approx(math.hypot(6, 4))
  assert pim.hd95(a, a) == 0.0


def test_both_empty_scores_one_and_hd95_zero():
  empty = np.zeros((5, 6), bool)
  scores = pim.class_scores(empty, empty)
  assert (scores.dice, scores.iou, scores.precision, scores.recall) == (1, 1, 1, 1)
  assert scores.hd95 == 0.0 and scores.empty_case == pim.BOTH_EMPTY


@pytest.mark.parametrize('empty_side', ['pred', 'true'])
def test_exactly_one_empty_scores_zero_and_hd95_diagonal(empty_side):
  empty = np.zeros((30, 40), bool)
  full = empty.copy()
  full[3:9, 4:20] = True
  pred, true = (empty, full) if empty_side == 'pred' else (full, empty)
  scores = pim.class_scores(pred, true)
  assert (scores.dice, scores.iou, scores.precision, scores.recall) == (0, 0, 0, 0)
  assert scores.hd95 == pytest.approx(50.0)  # hypot(30, 40)
  assert scores.empty_case == f'{empty_side}_empty'
  in_mm = pim.class_scores(pred, true, spacing=(0.5, 0.25))
  assert in_mm.hd95 == pytest.approx(math.hypot(15, 10))
  values = [getattr(scores, k) for k in pim.SCORE_NAMES]
  assert np.all(np.isfinite(values))


def test_overlap_scores_by_hand():
  pred = np.zeros((4, 4), bool)
  true = np.zeros((4, 4), bool)
  pred[0, :3] = True  # 3 pixels
  true[0, 1:] = True  # 3 pixels, 2 shared
  scores = pim.class_scores(pred, true)
  assert scores.dice == pytest.approx(2 * 2 / 6)
  assert scores.iou == pytest.approx(2 / 4)
  assert scores.precision == pytest.approx(2 / 3)
  assert scores.recall == pytest.approx(2 / 3)
  assert (scores.intersection, scores.predicted, scores.true) == (2, 3, 3)
  assert scores.empty_case == ''


def test_image_scores_cover_the_foreground_classes():
  true = np.array([[0, 1, 2], [2, 2, 0]])
  pred = np.array([[0, 1, 1], [2, 2, 0]])
  binary = pim.image_scores(true > 0, true > 0, num_classes=1)
  assert len(binary) == 1 and binary[0].dice == 1.0
  three = pim.image_scores(pred, true, num_classes=3)
  assert len(three) == 2
  assert three[0].dice == pytest.approx(2 * 1 / 3)  # class 1: pred 2 px, true 1 px
  assert three[1].dice == pytest.approx(2 * 2 / 5)  # class 2: pred 2 px, true 3 px
  absent = pim.image_scores(pred, true, num_classes=4)[2]
  assert absent.empty_case == pim.BOTH_EMPTY


def test_paper_scores_threshold_half_strictly_and_in_percent():
  true = np.array([[1, 1], [0, 0]])
  probs = np.array([[0.9, 0.5], [0.2, 0.7]])[..., None]  # 0.5 is not foreground
  jaccard, dice = pim.paper_scores(probs, true, num_classes=1)
  assert jaccard == pytest.approx(100 * 1 / 3)
  assert dice == pytest.approx(100 * 2 / 4)
  nothing = pim.paper_scores(np.zeros((2, 2, 1)), np.zeros((2, 2)), num_classes=1)
  assert nothing == (100.0, 100.0)
  # K classes: one-vs-rest thresholding of each foreground class.
  softmax = np.zeros((2, 2, 3))
  softmax[..., 0] = 1.0
  softmax[0, 0] = [0.1, 0.8, 0.1]
  jaccard, dice = pim.paper_scores(softmax, np.array([[1, 0], [0, 2]]), 3)
  assert jaccard == pytest.approx(50.0) and dice == pytest.approx(50.0)


def test_bad_spacing_is_rejected():
  with pytest.raises(ValueError, match='spacing'):
    pim.hd95(np.ones((2, 2)), np.ones((2, 2)), spacing=(0, 1))


# A 3-class case worked out by hand: classes 1 and 2 present, class 3 absent
# from both truth and prediction.
TRUTH_3 = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]])
PRED_3 = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 2, 2], [0, 2, 2, 0]])
# class 1: |P∩T| = 3, |P| = 3, |T| = 4: Dice 6/7, IoU 3/4;
# class 2: |P∩T| = 3, |P| = 4, |T| = 4: Dice 6/8, IoU 3/5; class 3: absent.
DICE_SKIP = (6 / 7 + 6 / 8) / 2
IOU_SKIP = (3 / 4 + 3 / 5) / 2
DICE_COUNT = (6 / 7 + 6 / 8 + 1) / 3  # the old rule: class 3 scores 1
IOU_COUNT = (3 / 4 + 3 / 5 + 1) / 3


def test_absent_class_is_left_out_of_the_image_mean_by_default():
  probabilities = np.eye(4)[PRED_3]  # one-hot: each class's probability 0 or 1
  jaccard, dice = pim.paper_scores(probabilities, TRUTH_3, 4)
  assert (jaccard, dice) == pytest.approx((100 * IOU_SKIP, 100 * DICE_SKIP))
  old = pim.paper_scores(probabilities, TRUTH_3, 4, rule=pim.COUNT_ABSENT)
  assert old == pytest.approx((100 * IOU_COUNT, 100 * DICE_COUNT))
  classes = pim.image_scores(PRED_3, TRUTH_3, 4)
  absent = [c.empty_case == pim.BOTH_EMPTY for c in classes]
  assert absent == [False, False, True]
  dices = [c.dice for c in classes]
  assert pim.mean_over_classes(dices, absent) == pytest.approx(DICE_SKIP)
  assert pim.mean_over_classes(dices, absent, pim.COUNT_ABSENT) == pytest.approx(
    DICE_COUNT
  )
  # Every class absent (an empty image, correctly empty): 1, as before.
  assert pim.mean_over_classes([1.0, 1.0], [True, True]) == 1.0
  with pytest.raises(ValueError, match='absent-class rule'):
    pim.mean_over_classes(dices, absent, 'average')
