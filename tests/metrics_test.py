"""Dice and IoU on hand-made masks, including the empty-mask policy."""

import jax.numpy as jnp
import numpy as np
import pytest

from sharp_unet_jax.evaluation import metrics


def evaluate(pred, true, num_classes=2, valid=None):
  pred = jnp.asarray(pred, jnp.int32)
  true = jnp.asarray(true, jnp.int32)
  i, p, t = metrics.overlap_counts(pred, true, num_classes)
  loss = jnp.zeros(pred.shape[0])
  valid = jnp.ones(pred.shape[0]) if valid is None else jnp.asarray(valid, jnp.float32)
  collection = metrics.EvalMetrics.single_from_model_output(
    intersection=i, predicted=p, true=t, loss=loss, mask=valid
  )
  return {k: float(v) for k, v in collection.compute().items()}


def test_partial_overlap():
  pred = np.zeros((1, 4, 4))
  true = np.zeros((1, 4, 4))
  pred[0, :2] = 1  # 8 pixels
  true[0, 1:3] = 1  # 8 pixels, 4 shared
  out = evaluate(pred, true)
  assert out['dice'] == pytest.approx(2 * 4 / 16)
  assert out['iou'] == pytest.approx(4 / 12)
  assert out['dice_per_image'] == pytest.approx(0.5)


def test_both_empty_scores_one_and_one_empty_scores_zero():
  empty = np.zeros((1, 4, 4))
  full = np.ones((1, 4, 4))
  assert evaluate(empty, empty)['dice_per_image'] == 1.0
  assert evaluate(empty, empty)['iou'] == 1.0
  assert evaluate(full, empty)['dice_per_image'] == 0.0
  assert evaluate(empty, full)['iou_per_image'] == 0.0


def test_pooled_and_per_image_differ_as_defined():
  pred = np.zeros((2, 4, 4))
  true = np.zeros((2, 4, 4))
  pred[0, :2] = 1
  true[0, :1] = 1  # image 0: dice 2*4/(8+4) = 2/3; image 1: both empty -> 1
  out = evaluate(pred, true)
  assert out['dice_per_image'] == pytest.approx((2 / 3 + 1) / 2)
  assert out['dice'] == pytest.approx(2 / 3)  # pooled: the empty image adds nothing


def test_padding_is_masked_out():
  pred = np.zeros((2, 4, 4))
  true = np.zeros((2, 4, 4))
  true[1] = 1  # the padded example would score 0
  out = evaluate(pred, true, valid=[1, 0])
  assert out['dice_per_image'] == 1.0 and out['dice'] == 1.0


def test_multiclass_averages_foreground_classes():
  true = np.array([[[1, 1], [2, 2]]])
  pred = np.array([[[1, 1], [1, 2]]])
  # class 1: I=2, P=3, T=2 -> 0.8 ; class 2: I=1, P=1, T=2 -> 2/3 ; class 3 empty -> 1
  out = evaluate(pred, true, num_classes=4)
  # Pooled: class 3 has no pixel in the whole split either: left out too.
  assert out['dice'] == pytest.approx((0.8 + 2 / 3) / 2)
  assert out['iou'] == pytest.approx((2 / 3 + 1 / 2) / 2)
  # Per image: class 3, absent from truth and prediction, is left out.
  assert out['dice_per_image'] == pytest.approx((0.8 + 2 / 3) / 2)
  # class 1: IoU 2/3; class 2: IoU 1/2.
  assert out['iou_per_image'] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_pooled_keeps_a_class_present_in_any_image():
  # Class 2 is absent from image 0 but present in image 1: pooled, it counts.
  true = np.array([[[1, 1], [0, 0]], [[2, 2], [0, 0]]])
  pred = np.array([[[1, 1], [0, 0]], [[2, 0], [0, 0]]])
  out = evaluate(pred, true, num_classes=4)
  # class 1: I=2, P=2, T=2 -> 1; class 2: I=1, P=1, T=2 -> 2/3; class 3 absent.
  assert out['dice'] == pytest.approx((1 + 2 / 3) / 2)
  assert out['dice_per_image'] == pytest.approx((1 + 2 / 3) / 2)
  nothing = np.zeros((1, 2, 2))
  assert evaluate(nothing, nothing, num_classes=4)['dice'] == 1.0


def test_hard_predictions_threshold_and_argmax():
  binary = metrics.hard_predictions(jnp.array([[[[-0.1], [0.2]]]]))
  assert binary.tolist() == [[[0, 1]]]
  multi = metrics.hard_predictions(jnp.array([[[[0.0, 2.0, 1.0]]]]))
  assert multi.tolist() == [[[1]]]


def test_one_pass_sums_equal_numpy_sums_per_image_and_class():
  rng = np.random.default_rng(0)
  num_classes, shape = 4, (3, 5, 6)
  pred = rng.integers(0, num_classes, shape)
  true = rng.integers(0, num_classes, shape)
  probs = rng.dirichlet(np.ones(num_classes), shape).astype(np.float32)
  values = rng.normal(size=shape).astype(np.float32)
  got = metrics.hard_and_soft_overlap(
    jnp.asarray(pred),
    jnp.asarray(probs),
    jnp.asarray(true)[..., None],
    num_classes,
    values,
  )
  for c in range(1, num_classes):
    p, t, q = pred == c, true == c, probs[..., c]
    expected = {
      'intersection': (p & t).sum((1, 2)),
      'predicted': p.sum((1, 2)),
      'true': t.sum((1, 2)),
      'soft_intersection': (t * q).sum((1, 2)),
      'soft_union': (t + q - t * q).sum((1, 2)),
    }
    for name, value in expected.items():
      np.testing.assert_allclose(got[name][:, c - 1], value, rtol=1e-5, err_msg=name)
  np.testing.assert_allclose(got['pixel_sum'], values.sum((1, 2)), rtol=1e-5)
  assert 'pixel_sum' not in metrics.hard_and_soft_overlap(
    jnp.asarray(pred), jnp.asarray(probs), jnp.asarray(true), num_classes
  )
