"""The 'gpu_cudnn' form sums the gradient over devices as one flat float32
buffer, to the same sums as JAX's per-parameter sum (network.vary_summing_flat).

Checked on 4 simulated CPU devices by asking for the form explicitly.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharp_unet_jax.compilation import meshes, xla_options
from sharp_unet_jax.model import models, network


def sharded_batch_and_params(model):
  mesh = meshes.data_mesh(jax.devices()[:4])
  x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 16, 16, 3), np.float32))
  options = xla_options.init_options('cpu')
  params = jax.jit(model.init, compiler_options=options)(jax.random.key(0), x)['params']
  data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.device_put(x, data), jax.device_put(params, replicated)


def gradient_and_program(model, x, params):
  def loss(p):
    return jnp.mean(model.apply({'params': p}, x) ** 2)

  grad = jax.jit(jax.grad(loss))
  return grad(params), grad.lower(params).compile().as_text()


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_flat_sum_equals_the_per_parameter_sum_in_one_float32_all_reduce(
  dtype, monkeypatch
):
  model = models.UNet(
    num_filters=4,
    depth=2,
    sharp_kernel='laplacian',
    implementation='gpu_cudnn',
    dtype=jnp.dtype(dtype),
  )
  x, params = sharded_batch_and_params(model)
  size = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
  flat, flat_text = gradient_and_program(model, x, params)
  monkeypatch.setitem(network.FORMS['gpu_cudnn'], 'gradient_sum', 'per_parameter')
  per_parameter, per_parameter_text = gradient_and_program(model, x, params)
  # The same float32 sums of the same per-device gradients.
  for a, b in zip(
    jax.tree_util.tree_leaves(flat), jax.tree_util.tree_leaves(per_parameter)
  ):
    assert a.dtype == b.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # One all-reduce of every parameter's gradient, flat and in float32; JAX's
  # own sum leaves them in their shapes.
  reduced = re.findall(r'= (.*?) all-reduce(?:-start)?\(', flat_text)
  assert any(f'f32[{size}]' in shape for shape in reduced), reduced
  per_parameter_reduced = re.findall(
    r'= (.*?) all-reduce(?:-start)?\(', per_parameter_text
  )
  assert not any(f'f32[{size}]' in shape for shape in per_parameter_reduced)


def test_only_the_gpu_form_sums_flat():
  assert {form: spec['gradient_sum'] for form, spec in network.FORMS.items()} == {
    'reference': 'per_parameter',
    'cpu_fast': 'per_parameter',
    'tpu_packed': 'per_parameter',
    'gpu_cudnn': 'flat',
  }
