"""Tests of the segmentation losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharp_unet_jax.training import losses


def test_binary_cross_entropy_matches_formula():
  logits = jnp.array([[[[2.0], [-1.0]]]])
  labels = jnp.array([[[1, 0]]])
  p = jax.nn.sigmoid(np.array([2.0, -1.0]))
  expected = -(np.log(p[0]) + np.log(1 - p[1])) / 2
  assert float(losses.cross_entropy(logits, labels)) == pytest.approx(
    expected, rel=1e-5
  )


def test_categorical_cross_entropy_matches_formula():
  logits = jnp.array([[[[1.0, 2.0, 0.5]]]])
  labels = jnp.array([[[[1]]]])
  expected = -np.log(np.exp(2.0) / np.exp([1.0, 2.0, 0.5]).sum())
  assert float(losses.cross_entropy(logits, labels)) == pytest.approx(
    expected, rel=1e-5
  )


def test_dice_loss_near_zero_for_confident_correct_prediction():
  labels = jnp.zeros((1, 8, 8), jnp.int32).at[0, 2:6, 2:6].set(1)
  logits = jnp.where(labels[..., None] == 1, 20.0, -20.0)
  assert float(losses.soft_dice(logits, labels)) < 1e-3
  assert float(losses.soft_dice(-logits, labels)) > 0.9


def test_weights_exclude_pixels():
  logits = jnp.array([[[[5.0], [5.0]]]])
  labels = jnp.array([[[1, 0]]])
  weights = jnp.array([[[1.0, 0.0]]])
  only_first = losses.cross_entropy(logits[:, :, :1], labels[:, :, :1])
  assert float(losses.cross_entropy(logits, labels, weights)) == pytest.approx(
    float(only_first)
  )


def test_combined_by_hand_and_unknown_name_fails():
  # p = 0.5 everywhere, half the pixels foreground: cross-entropy ln 2; soft
  # Dice (2 * 1 + 1) / (2 + 2 + 1) = 0.6, so its loss is 0.4.
  logits = jnp.zeros((1, 2, 2, 1))
  labels = jnp.array([[[1, 1], [0, 0]]])
  combined = losses.get_loss('cross_entropy_dice')(logits, labels)
  assert float(combined) == pytest.approx(np.log(2.0) + 0.4, rel=1e-6)
  with pytest.raises(ValueError, match="config.loss='l2'"):
    losses.get_loss('l2')


def test_focal_loss_matches_formula_and_reduces_to_cross_entropy():
  logits = jnp.array([[[[2.0], [-1.0]]]])
  labels = jnp.array([[[1, 0]]])
  p_true = 1 / (1 + np.exp(-np.array([2.0, 1.0])))  # p of the true class
  expected = np.mean(-((1 - p_true) ** 2) * np.log(p_true))
  assert float(losses.get_loss('focal')(logits, labels)) == pytest.approx(
    expected, rel=1e-5
  )
  assert float(losses.focal(logits, labels, gamma=0.0)) == pytest.approx(
    float(losses.cross_entropy(logits, labels)), rel=1e-5
  )
  many = jnp.array([[[[1.0, 2.0, 0.5]]]])
  label = jnp.array([[[[1]]]])
  p = np.exp(2.0) / np.exp([1.0, 2.0, 0.5]).sum()
  assert float(losses.focal(many, label)) == pytest.approx(
    -((1 - p) ** 2) * np.log(p), rel=1e-5
  )
