"""The fast max-pool and transposed conv equal the Flax reference ops."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sharp_unet_jax.compilation import xla_options
from sharp_unet_jax.model import fast_layers, models


def test_max_pool_values_and_gradients_equal_nn_max_pool_with_ties():
  # Small integers make many ties inside the 2x2 windows.
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 3, (2, 8, 6, 3)).astype(np.float32))
  g = jnp.asarray(rng.normal(size=(2, 4, 3, 3)).astype(np.float32))

  def reference(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2))

  out, vjp = jax.vjp(fast_layers.max_pool_2x2, x)
  ref_out, ref_vjp = jax.vjp(reference, x)
  np.testing.assert_array_equal(out, ref_out)
  np.testing.assert_array_equal(vjp(g)[0], ref_vjp(g)[0])
  # Within jit and under the dispatching helper too.
  ref_grad = jax.grad(lambda x: jnp.sum(reference(x) * g))
  grad = jax.jit(
    jax.grad(lambda x: jnp.sum(fast_layers.max_pool(x, 'strided_slices') * g))
  )
  np.testing.assert_array_equal(grad(x), ref_grad(x))


@pytest.mark.parametrize('implementation', fast_layers.UPSAMPLE_IMPLEMENTATIONS)
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_upconv_equals_conv_transpose(dtype, implementation):
  x = jax.random.normal(jax.random.key(0), (2, 5, 3, 6))

  def fast(params, x):
    # As network.py applies it: inputs and parameters cast as nn.ConvTranspose does.
    p = params['params']
    x, kernel, bias = nn.dtypes.promote_dtype(x, p['kernel'], p['bias'], dtype=dtype)
    return fast_layers.upconv(x, kernel, implementation) + bias

  ref = nn.ConvTranspose(
    4,
    (2, 2),
    strides=(2, 2),
    padding='SAME',
    dtype=dtype,
    kernel_init=nn.initializers.normal(1.0),
    bias_init=nn.initializers.zeros,
  )
  params = ref.init(jax.random.key(1), x)
  params = jax.tree_util.tree_map(
    lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params
  )
  out, ref_out = fast(params, x), ref.apply(params, x)
  assert out.shape == (2, 10, 6, 4) and out.dtype == ref_out.dtype
  tol = 1e-5 if dtype == jnp.float32 else 5e-2
  np.testing.assert_allclose(
    np.asarray(out, np.float32), np.asarray(ref_out, np.float32), rtol=tol, atol=tol
  )
  # Independent of Flax and lax: the definition in numpy. Input pixel (i, j)
  # paints output pixels (2i + a, 2j + b) with kernel tap (1 - a, 1 - b)
  # (nn.ConvTranspose's kernel orientation), plus the bias.
  kernel = np.asarray(params['params']['kernel'], np.float64)[::-1, ::-1]
  expected = np.einsum('nijc,abco->niajbo', np.asarray(x, np.float64), kernel)
  expected = expected.reshape(2, 10, 6, 4) + np.asarray(params['params']['bias'])
  scale = np.max(np.abs(expected))
  np.testing.assert_allclose(
    np.asarray(out, np.float64), expected, rtol=0, atol=tol * scale / 5
  )

  def loss(apply):
    return lambda p, x: jnp.sum(jnp.sin(apply(p, x).astype(jnp.float32)))

  if dtype == jnp.float32:
    grads = jax.grad(loss(fast), argnums=(0, 1))(params, x)
    ref_grads = jax.grad(loss(ref.apply), argnums=(0, 1))(params, x)
    jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
      grads,
      ref_grads,
    )


def relative_error(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize('form', ['cpu_fast', 'gpu_cudnn'])
def test_sharp_unet_forms_agree_with_the_reference(form):
  x = jax.random.uniform(jax.random.key(3), (2, 16, 16, 3))
  y = jax.random.bernoulli(jax.random.key(4), 0.3, (2, 16, 16, 1))
  fast, ref = (
    models.UNet(num_filters=4, depth=2, sharp_kernel='laplacian', implementation=name)
    for name in (form, 'reference')
  )
  # Jitted as train.Trainer does: unoptimised on CPU, where optimising (or,
  # eagerly, compiling op by op) threefry's kernels costs more than the test.
  params, fast_params = (
    jax.jit(m.init, compiler_options=xla_options.init_options('cpu'))(
      jax.random.key(0), x
    )['params']
    for m in (ref, fast)
  )
  # Same parameter tree and initial values whatever the implementation.
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, fast_params)

  def loss_and_logits(model):
    def fn(p):
      logits = model.apply({'params': p}, x)
      return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y)), logits

    return jax.jit(jax.grad(fn, has_aux=True))

  grads, logits = loss_and_logits(fast)(params)
  ref_grads, ref_logits = loss_and_logits(ref)(params)
  assert relative_error(logits, ref_logits) < 1e-5
  ref_leaves = dict(jax.tree_util.tree_leaves_with_path(ref_grads))
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    assert relative_error(grad, ref_leaves[path]) < 1e-4, jax.tree_util.keystr(path)


def test_unknown_implementation_is_rejected():
  with pytest.raises(ValueError, match='Unknown implementation'):
    fast_layers.max_pool(jnp.zeros((1, 2, 2, 1)), 'fft')
  # 'auto' is resolved per platform by a whole form (network.platform_forward).
  with pytest.raises(ValueError, match='Unknown implementation'):
    fast_layers.upconv(jnp.zeros((1, 2, 2, 1)), jnp.zeros((2, 2, 1, 1)), 'auto')
