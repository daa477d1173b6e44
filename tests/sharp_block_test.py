"""Tests of the Sharp block: kernels, reference equality, constness, gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharp_unet_jax.model import sharp_block


def reference_depthwise(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """Plain numpy zero-padded 3x3 cross-correlation of every channel."""
  n, h, w, c = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros_like(x, dtype=np.float64)
  for i in range(3):
    for j in range(3):
      out += kernel[i, j] * padded[:, i : i + h, j : j + w, :]
  return out


def test_named_kernels_match_the_paper():
  lap = sharp_block.make_kernel('laplacian')
  assert lap[1, 1] == 8 and lap.sum() == 0
  assert np.all(np.delete(lap.ravel(), 4) == -1)
  sharpen = sharp_block.make_kernel('sharpen')
  assert sharpen[1, 1] == 5 and sharpen.sum() == 1 and sharpen[0, 0] == 0
  np.testing.assert_allclose(sharp_block.make_kernel('blur').sum(), 1.0)


def test_bad_kernels_are_rejected():
  with pytest.raises(ValueError, match='Unknown sharp kernel'):
    sharp_block.make_kernel('emboss')
  with pytest.raises(ValueError, match='3x3'):
    sharp_block.make_kernel(np.ones((5, 5)))


@pytest.mark.parametrize('implementation', ['conv', 'conv_dense_kernel', 'shifted_sum'])
@pytest.mark.parametrize(
  'kernel', ['laplacian', 'sharpen', 'blur', [[1, 2, 3], [4, 5, 6], [7, 8, 9]]]
)
def test_block_equals_numpy_reference(implementation, kernel):
  x = np.random.default_rng(0).normal(size=(2, 9, 7, 5)).astype(np.float32)
  block = sharp_block.SharpBlock(kernel=kernel, implementation=implementation)
  out = block.apply({}, jnp.asarray(x))
  expected = reference_depthwise(x, sharp_block.make_kernel(kernel).astype(np.float64))
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)


def test_laplacian_maps_constant_interior_to_zero():
  x = jnp.full((1, 6, 6, 2), 3.0)
  out = sharp_block.SharpBlock().apply({}, x)
  np.testing.assert_allclose(out[0, 1:-1, 1:-1], 0.0, atol=1e-6)
  assert float(out[0, 0, 0, 0]) == pytest.approx(8 * 3 - 3 * 3)  # corner: 3 neighbours


def test_block_has_no_parameters_or_state():
  variables = sharp_block.SharpBlock().init(jax.random.key(0), jnp.ones((1, 4, 4, 3)))
  assert jax.tree_util.tree_leaves(variables) == []


def test_every_implementation_is_the_hand_filtered_laplacian():
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 7, 9, 3)))
  # Centre 8, each of the 8 neighbours -1, zero padding, channel by channel.
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  want = 9 * x - sum(
    padded[:, i : i + 7, j : j + 9] for i in range(3) for j in range(3)
  )
  for name in (*sharp_block.IMPLEMENTATIONS, 'auto'):
    got = sharp_block.SharpBlock(implementation=name).apply({}, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
  with pytest.raises(ValueError, match='implementation'):
    sharp_block.SharpBlock(implementation='fft').apply({}, x)


@pytest.mark.parametrize(
  'platforms, grouped', [(('cpu',), False), (('tpu',), True), (('cuda',), True)]
)
def test_auto_follows_the_platform_exported_for(platforms, grouped):
  block = sharp_block.SharpBlock(implementation='auto')
  x = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
  exported = jax.export.export(
    jax.jit(lambda x: block.apply({}, x)), platforms=platforms
  )(x)
  assert ('feature_group_count = 3' in exported.mlir_module()) == grouped


def test_auto_gradient_equals_the_convolutions():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))

  def loss(implementation):
    block = sharp_block.SharpBlock(implementation=implementation)
    return jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(block.apply({}, x)))))

  np.testing.assert_allclose(loss('auto')(x), loss('conv')(x), rtol=1e-5, atol=1e-5)


def test_gradients_flow_through_the_block_to_earlier_layers():
  class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.Conv(4, (3, 3), name='before')(x)
      return jnp.sum(sharp_block.SharpBlock()(x) ** 2)

  model = Tiny()
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  params = model.init(jax.random.key(0), x)['params']
  grads = jax.grad(lambda p: model.apply({'params': p}, x))(params)
  assert float(jnp.abs(grads['before']['kernel']).sum()) > 0


def test_bfloat16_output_dtype():
  out = sharp_block.SharpBlock(dtype=jnp.bfloat16).apply({}, jnp.ones((1, 4, 4, 2)))
  assert out.dtype == jnp.bfloat16
