"""The TPU form (2x2 blocked levels) computes what the reference form does.

Checked here on CPU by asking for implementation='tpu_blocked' explicitly;
'auto' picks it only in programs compiled for TPU.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sharp_unet_jax.compilation import meshes
from sharp_unet_jax.model import blocked, models, network, sharp_block


def relative_error(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def random(seed, shape):
  return jax.random.normal(jax.random.key(seed), shape)


@pytest.mark.parametrize('sharp_kernel', ['laplacian', None])
def test_blocked_unet_equals_the_reference_in_logits_and_gradients(sharp_kernel):
  # Depth 4, odd channels everywhere: 3 input channels, 5 filters, 3 classes.
  x = jax.random.uniform(jax.random.key(3), (2, 16, 32, 3))
  labels = jax.random.randint(jax.random.key(4), (2, 16, 32), 0, 3)
  blocked_model, reference = (
    models.UNet(
      num_classes=3, num_filters=5, sharp_kernel=sharp_kernel, implementation=i
    )
    for i in ('tpu_blocked', 'reference')
  )
  params = jax.jit(reference.init)(jax.random.key(0), x)['params']
  # The same parameter tree and initial values.
  jax.tree_util.tree_map(
    np.testing.assert_array_equal,
    params,
    jax.jit(blocked_model.init)(jax.random.key(0), x)['params'],
  )

  def grads_and_logits(model):
    def loss(p):
      logits = model.apply({'params': p}, x)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return jnp.mean(ce), logits

    return jax.jit(jax.grad(loss, has_aux=True))(params)

  grads, logits = grads_and_logits(blocked_model)
  ref_grads, ref_logits = grads_and_logits(reference)
  assert relative_error(logits, ref_logits) < 1e-5
  ref_leaves = dict(jax.tree_util.tree_leaves_with_path(ref_grads))
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    assert relative_error(grad, ref_leaves[path]) < 1e-4, jax.tree_util.keystr(path)


def test_only_the_narrow_first_two_levels_are_blocked():
  assert network.blocked_levels('tpu_blocked', 32, 4) == {0, 1}
  assert network.blocked_levels('tpu_blocked', 64, 4) == {0}
  assert network.blocked_levels('tpu_blocked', 128, 4) == set()
  assert network.blocked_levels('reference', 32, 4) == set()


def test_space_to_depth_orders_pixels_then_channels():
  x = random(0, (2, 4, 6, 3))
  xb = blocked.space_to_depth(x)
  assert xb.shape == (2, 2, 3, 12)
  # Element (a, b, c) of block (i, j) is pixel (2i + a, 2j + b), channel c.
  np.testing.assert_array_equal(xb[1, 1, 2, 2 * 3 + 1], x[1, 3, 4, 1])
  np.testing.assert_array_equal(blocked.depth_to_space(xb), x)
  np.testing.assert_array_equal(
    blocked.channel_major(xb)[1, 1, 2, 1 * 4 + 2], x[1, 3, 4, 1]
  )


def plain_conv(x, kernel, bias):
  return network.conv(x, kernel, bias)


@pytest.mark.parametrize('channel_major', [False, True])
def test_blocked_conv_of_two_parts_equals_the_conv_of_their_concatenation(
  channel_major,
):
  first, second = random(0, (2, 6, 8, 3)), random(1, (2, 6, 8, 5))
  kernel, bias = random(2, (3, 3, 8, 7)), random(3, (7,))
  expected = plain_conv(jnp.concatenate([first, second], -1), kernel, bias)
  second_b = blocked.space_to_depth(second)
  if channel_major:
    second_b = blocked.channel_major(second_b)
  xb = jnp.concatenate([blocked.space_to_depth(first), second_b], -1)
  conv = jax.jit(
    functools.partial(blocked.conv3x3, parts=[(3, False), (5, channel_major)])
  )
  got = conv(xb, kernel, bias)
  np.testing.assert_allclose(blocked.depth_to_space(got), expected, atol=2e-5)


def test_blocked_sharp_block_is_the_grouped_conv_in_channel_major_order():
  x = random(0, (2, 6, 8, 5))
  kernel = sharp_block.make_kernel('laplacian')
  got = blocked.sharp_filter(blocked.space_to_depth(x), kernel)
  expected = blocked.channel_major(
    blocked.space_to_depth(sharp_block.depthwise_filter(x, kernel))
  )
  np.testing.assert_allclose(got, expected, atol=1e-5)
  lowered = jax.jit(lambda x: blocked.sharp_filter(x, kernel)).lower(
    blocked.space_to_depth(x)
  )
  assert 'feature_group_count = 5' in lowered.as_text()


def test_blocked_max_pool_gives_ties_gradient_as_select_and_scatter():
  # Integers in a small range: many ties inside windows.
  x = jax.random.randint(jax.random.key(0), (2, 6, 8, 3), 0, 3).astype(jnp.float32)
  g = random(1, (2, 3, 4, 3))

  def reference(x):
    return jnp.sum(nn.max_pool(x, (2, 2), strides=(2, 2)) * g)

  def blocked_pool(x):
    return jnp.sum(blocked.max_pool(blocked.space_to_depth(x)) * g)

  np.testing.assert_array_equal(blocked_pool(x), reference(x))
  np.testing.assert_array_equal(jax.grad(blocked_pool)(x), jax.grad(reference)(x))


def test_blocked_upconv_and_head_equal_their_plain_ops():
  x = random(0, (2, 3, 4, 6))
  kernel, bias = random(1, (2, 2, 6, 5)), random(2, (5,))
  expected = jax.lax.conv_transpose(x, kernel, (2, 2), 'SAME') + bias
  got = blocked.depth_to_space(blocked.upconv(x, kernel, bias))
  np.testing.assert_allclose(got, expected, atol=1e-5)
  head, head_bias = random(3, (1, 1, 5, 2)), random(4, (2,))
  got = blocked.depth_to_space(
    blocked.head(blocked.upconv(x, kernel, bias), head, head_bias)
  )
  np.testing.assert_allclose(got, plain_conv(expected, head, head_bias), atol=1e-5)


def test_blocked_form_runs_on_a_batch_sharded_over_devices():
  mesh = meshes.data_mesh(jax.devices()[:2])
  model = models.UNet(num_filters=3, depth=1, implementation='tpu_blocked')
  x = random(0, (4, 8, 8, 3))
  params = jax.jit(model.init)(jax.random.key(0), x)['params']
  data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  apply = jax.jit(functools.partial(model.apply), out_shardings=data)
  sharded = jax.device_put(x, data)
  assert jax.typeof(sharded).sharding.spec[0] == 'data'
  logits = apply({'params': params}, sharded)
  reference = models.UNet(num_filters=3, depth=1, implementation='reference')
  expected = jax.jit(reference.apply)({'params': params}, x)
  assert relative_error(logits, expected) < 1e-5


def lowered_text(implementation, platform):
  model = models.UNet(num_filters=4, depth=2, implementation=implementation)
  x = jnp.zeros((1, 16, 16, 3))
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x))
  return apply.trace(params, x).lower(lowering_platforms=(platform,)).as_text()


def test_auto_takes_the_configured_tpu_form_and_keeps_cpu_and_gpu_forms():
  # Level 0 blocked: the first convolution reads 4 x 3 channels of 8x8 blocks.
  blocked_conv = 'tensor<1x8x8x12xf32>'
  assert blocked_conv in lowered_text('tpu_blocked', 'tpu')
  tpu_is_blocked = network.AUTO_TPU_FORM == 'tpu_blocked'
  assert (blocked_conv in lowered_text('auto', 'tpu')) == tpu_is_blocked
  assert blocked_conv not in lowered_text('auto', 'cpu')
  assert blocked_conv not in lowered_text('auto', 'cuda')
