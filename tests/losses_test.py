"""Tests of the segmentation losses."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np
import optax
import pytest

from sharp_unet_jax.compilation import meshes
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


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_categorical_losses_equal_the_gather_form_and_keep_the_batch_sharding(dtype):
  """The true class's logit is picked elementwise: the same values and
  gradients as optax's gather (take_along_axis), and a gradient that keeps
  the batch sharded over an Explicit mesh axis."""
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(8, 6, 6, 4)) * 3, dtype)
  labels = jnp.asarray(rng.integers(0, 4, (8, 6, 6)))

  def by_gather(x):
    return optax.softmax_cross_entropy_with_integer_labels(x, labels).mean()

  def focal_by_gather(x):
    log_p = jax.nn.log_softmax(x, axis=-1)
    log_p_true = jnp.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]
    return jnp.mean(-((1.0 - jnp.exp(log_p_true)) ** 2) * log_p_true)

  for ours, gathered in (
    (lambda x: losses.cross_entropy(x, labels), by_gather),
    (lambda x: losses.focal(x, labels), focal_by_gather),
  ):
    for got, want in zip(
      jax.value_and_grad(ours)(logits), jax.value_and_grad(gathered)(logits)
    ):
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

  # Over a batch on the project's mesh (4 CPU devices, Explicit axis), as the
  # 'reference' form's train step computes it.
  batch = NamedSharding(meshes.data_mesh(jax.devices()[:4]), PartitionSpec(meshes.AXIS))
  on_mesh = jax.device_put(labels, batch)
  grad = jax.jit(jax.grad(lambda x: losses.cross_entropy(x, on_mesh)))(
    jax.device_put(logits, batch)
  )
  assert grad.sharding.spec[0] == meshes.AXIS
  with pytest.raises(ValueError, match='do not match'):
    losses.cross_entropy(logits, labels[:4])
  np.testing.assert_array_equal(
    np.asarray(grad), np.asarray(jax.grad(by_gather)(logits))
  )
