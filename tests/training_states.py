"""Comparing two training states in tests, so that a wrong gradient scale
cannot pass unseen."""

import jax
import numpy as np


def assert_moments_close(opt_state_a, opt_state_b) -> None:
  """Adam's moments of two runs agree, relative to each leaf's scale.

  Adam moves each weight by about lr x sign(gradient), so after a few steps
  the weights say little about the gradients' size; its moments carry it
  (mu ~ g, nu ~ g^2): a gradient off by a factor fails here even where the
  weights agree. Summation order alone stays far inside the tolerance.
  """
  pairs = zip(
    jax.tree_util.tree_leaves(opt_state_a),
    jax.tree_util.tree_leaves(opt_state_b),
    strict=True,
  )
  for a, b in pairs:
    scale = float(np.max(np.abs(b))) if np.size(b) else 0.0
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * scale)
