"""The one Dice and IoU: from counts, in NumPy and in a jitted JAX step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharp_unet_jax.evaluation import overlap


def test_counts_dice_and_iou_of_two_masks():
  pred = np.array([[1, 1, 0], [0, 1, 0]], bool)
  true = np.array([[1, 0, 0], [0, 1, 1]], bool)
  assert overlap.counts(pred, true) == (2, 3, 3)
  assert float(overlap.dice(2, 3, 3)) == pytest.approx(4 / 6)
  assert float(overlap.iou(2, 3, 3)) == pytest.approx(2 / 4)


def test_empty_sets_score_one_and_disjoint_sets_zero():
  assert float(overlap.dice(0, 0, 0)) == float(overlap.iou(0, 0, 0)) == 1.0
  assert float(overlap.dice(0, 5, 0)) == float(overlap.iou(0, 0, 5)) == 0.0


def test_soft_counts_below_one_are_not_clipped():
  # Sums of probabilities may be under one pixel: 2 * 0.1 / 0.4 and 0.1 / 0.3.
  assert float(overlap.dice(0.1, 0.2, 0.2)) == pytest.approx(0.5)
  assert float(overlap.iou(0.1, 0.2, 0.2)) == pytest.approx(1 / 3)


def test_jax_arrays_inside_jit_equal_numpy():
  inter = np.array([[0.0, 2.0, 5.0]], np.float32)
  pred = np.array([[0.0, 3.0, 9.0]], np.float32)
  true = np.array([[0.0, 4.0, 5.0]], np.float32)
  for score in (overlap.dice, overlap.iou):
    got = jax.jit(lambda i, p, t, score=score: score(i, p, t, xp=jnp))(
      inter, pred, true
    )
    np.testing.assert_allclose(got, score(inter, pred, true), rtol=1e-6)
    assert got[0, 0] == 1.0
