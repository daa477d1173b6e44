"""The CPU compiler options: what they are, that they take effect, same results."""

import re

import jax
from jax import lax
import numpy as np

from sharp_unet_jax import xla_options

DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


def conv_and_gradients(x, w, g):
  def conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=DIMENSIONS)

  y, vjp = jax.vjp(conv, x, w)
  return (y, *vjp(g))


def fusion_kinds_of_convolutions(hlo: str) -> set:
  """Fusion kinds ('__ynn_fusion', ...) of the fusions that hold a convolution."""
  kinds = set()
  for computation in re.split(r'\n(?=%)', hlo):
    if ' convolution(' not in computation:
      continue
    name = computation.split(' ', 1)[0]
    for call in re.findall(rf'calls={re.escape(name)}\b.*', hlo):
      kinds.update(re.findall(r'"kind":"(\w+)"', call))
  return kinds


def test_cpu_keeps_ynnpack_for_dots_only(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
  assert xla_options.compute_options() == {
    'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_DOT'
  }
  assert xla_options.init_options() == {'xla_backend_optimization_level': 0}


def test_a_users_own_ynn_flag_wins(monkeypatch):
  monkeypatch.setenv(
    'XLA_FLAGS',
    '--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION',
  )
  assert xla_options.compute_options() is None


def test_convolutions_leave_ynnpack_and_results_stay_the_same():
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, 16, 16, 32))
  w = jax.random.normal(keys[1], (3, 3, 32, 32))
  g = jax.random.normal(keys[2], (2, 16, 16, 32))
  lowered = jax.jit(conv_and_gradients).lower(x, w, g)
  default = lowered.compile()
  ours = lowered.compile(compiler_options=xla_options.compute_options())
  # jaxlib's default puts convolutions into YNNPACK fusions; ours does not.
  assert '__ynn_fusion' in fusion_kinds_of_convolutions(default.as_text())
  assert ' convolution(' in ours.as_text()
  assert '__ynn_fusion' not in fusion_kinds_of_convolutions(ours.as_text())
  for a, b in zip(ours(x, w, g), default(x, w, g)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
