"""The evaluation step's one-pass sums against the per-kind computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharp_unet_jax.evaluation import metrics
from sharp_unet_jax.training import losses, steps


def logits_as_model(variables, images):
  """A stand-in model whose logits are its input."""
  del variables
  return images


@pytest.mark.parametrize('loss', sorted(losses.LOSSES))
@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('outputs', ['platform', 'one_pass'])
def test_eval_step_equals_each_metric_computed_on_its_own(loss, channels, outputs):
  rng = np.random.default_rng(channels)
  num_classes = channels
  logits = jnp.asarray(rng.normal(size=(4, 6, 5, channels)), jnp.float32)
  mask = jnp.asarray(rng.integers(0, max(num_classes, 2), (4, 6, 5)), jnp.int32)
  valid = jnp.array([1.0, 1.0, 1.0, 0.0])
  loss_fn = losses.get_loss(loss)
  if outputs == 'one_pass':  # the TPU programs' sums, run here
    got = metrics.EvalMetrics.single_from_model_output(
      mask=valid,
      **steps.eval_outputs_one_pass(
        logits, mask, loss_fn=loss_fn, num_classes=num_classes
      ),
    )
  else:
    got = steps.eval_step(
      {},
      {'image': logits, 'mask': mask, 'valid': valid},
      apply_fn=logits_as_model,
      loss_fn=loss_fn,
      num_classes=num_classes,
    )
  k = max(num_classes, 2)
  intersection, predicted, true = metrics.overlap_counts(
    metrics.hard_predictions(logits), mask, k
  )
  soft_intersection, soft_union = metrics.soft_overlap(
    losses.probabilities(logits), mask, k
  )
  per_example = jax.vmap(lambda x, y: loss_fn(x[None], y[None]))(logits, mask)
  expected = metrics.EvalMetrics.single_from_model_output(
    loss=per_example,
    mask=valid,
    intersection=intersection,
    predicted=predicted,
    true=true,
    soft_intersection=soft_intersection,
    soft_union=soft_union,
  )
  got, expected = got.compute(), expected.compute()
  assert set(got) == set(expected)
  for name in expected:
    np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, err_msg=name)
