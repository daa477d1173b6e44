"""The TPU form (images packed in the lanes) computes what the reference does.

Checked here on CPU by asking for implementation='tpu_packed' explicitly;
'auto' picks it only in programs compiled for TPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sharp_unet_jax.compilation import hlo_stats, meshes
from sharp_unet_jax.model import models, network, packed


def relative_error(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def random(seed, shape):
  return jax.random.normal(jax.random.key(seed), shape)


# (filters, batch): 5 filters and a batch of 8 pack 8 images at levels 0-1
# (5 and 10 channels), 4 at level 2 (20), 2 at level 3 (40) and none in the
# bottleneck (80); 24 filters and a batch of 4 pack 4 images at level 0, 2 at
# level 1 (48) and none below.
CASES = {(5, 8): [8, 8, 4, 2, 1], (24, 4): [4, 2, 1, 1, 1]}


@pytest.mark.parametrize('sharp_kernel', ['laplacian', None])
@pytest.mark.parametrize('filters,batch', sorted(CASES))
def test_packed_unet_equals_the_reference_in_logits_and_gradients(
  sharp_kernel, filters, batch
):
  # Depth 4, odd channels in and out: 3 input channels, 3 classes.
  x = jax.random.uniform(jax.random.key(3), (batch, 16, 32, 3))
  labels = jax.random.randint(jax.random.key(4), (batch, 16, 32), 0, 3)
  assert network.images_per_level('tpu_packed', x, filters, 4) == CASES[filters, batch]
  packed_model, reference = (
    models.UNet(
      num_classes=3, num_filters=filters, sharp_kernel=sharp_kernel, implementation=i
    )
    for i in ('tpu_packed', 'reference')
  )
  params = jax.jit(reference.init)(jax.random.key(0), x)['params']
  # The same parameter tree and initial values.
  jax.tree_util.tree_map(
    np.testing.assert_array_equal,
    params,
    jax.jit(packed_model.init)(jax.random.key(0), x)['params'],
  )

  def grads_and_logits(model):
    def loss(p):
      logits = model.apply({'params': p}, x)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return jnp.mean(ce), logits

    return jax.jit(jax.grad(loss, has_aux=True))(params)

  grads, logits = grads_and_logits(packed_model)
  ref_grads, ref_logits = grads_and_logits(reference)
  assert relative_error(logits, ref_logits) < 1e-5
  ref_leaves = dict(jax.tree_util.tree_leaves_with_path(ref_grads))
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    assert relative_error(grad, ref_leaves[path]) < 1e-4, jax.tree_util.keystr(path)


def test_images_per_pack_fills_the_lanes_as_the_batch_allows():
  def per_pack(batch, channels):
    return packed.images_per_pack(jnp.zeros((batch, 2, 2, 1)), channels)

  assert per_pack(16, 32) == 4  # 4 x 32 = 128 lanes
  assert per_pack(16, 5) == 16  # 16 x 5 = 80; 32 x 5 > 128
  assert per_pack(6, 32) == 2  # the batch allows no more
  assert per_pack(7, 32) == 1
  assert per_pack(16, 128) == 1
  assert (
    network.images_per_level('reference', jnp.zeros((16, 2, 2, 1)), 8, 2) == [1] * 3
  )


def test_pack_puts_each_images_channels_side_by_side():
  x = random(0, (6, 3, 4, 5))
  xp = packed.pack(x, 2)
  assert xp.shape == (3, 3, 4, 10)
  # Channel c of image 2n + g is lane 5 g + c of pack n.
  np.testing.assert_array_equal(xp[1, 2, 3, 5 * 1 + 4], x[3, 2, 3, 4])
  np.testing.assert_array_equal(xp[2, 0, 1, 2], x[4, 0, 1, 2])
  np.testing.assert_array_equal(packed.unpack(xp, 2), x)
  # Packs of 2 images packed by 2 are packs of 4, in the same order.
  y = random(1, (8, 3, 4, 5))
  np.testing.assert_array_equal(packed.pack(packed.pack(y, 2), 2), packed.pack(y, 4))
  np.testing.assert_array_equal(packed.unpack(packed.pack(y, 4), 2), packed.pack(y, 2))
  assert packed.pack(x, 1) is x and packed.unpack(x, 1) is x


def test_block_diagonal_kernel_holds_the_kernel_and_exact_zeros():
  kernel = random(0, (3, 3, 5, 7))
  diagonal = packed.block_diagonal(kernel, 3)
  assert diagonal.shape == (3, 3, 15, 21)
  for g in range(3):
    for h in range(3):
      block = diagonal[:, :, 5 * g : 5 * g + 5, 7 * h : 7 * h + 7]
      np.testing.assert_array_equal(block, kernel if g == h else jnp.zeros_like(kernel))
  # So a packed convolution is the plain one of each image.
  x, bias = random(1, (6, 8, 8, 5)), random(2, (7,))
  got = network.conv(packed.pack(x, 3), kernel, bias, 3)
  expected = network.conv(x, kernel, bias)
  np.testing.assert_allclose(packed.unpack(got, 3), expected, rtol=1e-5, atol=1e-5)


def sharded_model_and_batch():
  mesh = meshes.data_mesh(jax.devices()[:2])
  model = models.UNet(num_filters=3, depth=1, implementation='tpu_packed')
  x = random(0, (8, 8, 8, 3))
  params = jax.jit(model.init)(jax.random.key(0), x)['params']
  data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return model, jax.device_put(params, replicated), x, jax.device_put(x, data)


def test_each_device_packs_its_own_images():
  model, params, x, sharded = sharded_model_and_batch()
  apply = jax.jit(model.apply)
  # 4 images per device, all in one pack: 4 x 3 input channels.
  assert 'tensor<1x8x8x12xf32>' in apply.lower({'params': params}, sharded).as_text()
  logits = apply({'params': params}, sharded)
  assert jax.typeof(logits).sharding.spec[0] == 'data'
  reference = models.UNet(num_filters=3, depth=1, implementation='reference')
  expected = jax.jit(reference.apply)({'params': params}, x)
  assert relative_error(logits, expected) < 1e-5


def test_devices_sum_the_gradient_of_each_kernel_not_of_its_block_diagonal():
  model, params, _, sharded = sharded_model_and_batch()

  def loss(p):
    return jnp.mean(model.apply({'params': p}, sharded) ** 2)

  text = jax.jit(jax.grad(loss)).lower(params).compile().as_text()
  reduced = hlo_stats.collectives(text)['all-reduce']['bytes']
  param_bytes = sum(p.nbytes for p in jax.tree_util.tree_leaves(params))
  # The parameters' gradients, plus at most the loss; the block-diagonal
  # kernels' gradients would be 4-16 times as large.
  assert param_bytes <= reduced <= param_bytes + 8, (reduced, param_bytes)


def lowered_text(implementation, platform):
  model = models.UNet(num_filters=4, depth=2, implementation=implementation)
  x = jnp.zeros((2, 16, 16, 3))
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x))
  return apply.trace(params, x).lower(lowering_platforms=(platform,)).as_text()


def test_auto_takes_the_packed_form_for_tpu_only():
  # Packed: the first convolution reads both images' 3 channels side by side.
  packed_input = 'tensor<1x16x16x6xf32>'
  assert packed_input in lowered_text('tpu_packed', 'tpu')
  assert network.AUTO_TPU_FORM == 'tpu_packed'
  assert packed_input in lowered_text('auto', 'tpu')
  assert packed_input not in lowered_text('auto', 'cpu')
  assert packed_input not in lowered_text('auto', 'cuda')


def test_a_symbolic_batch_is_left_unpacked():
  # jax.export with a symbolic batch (export.py) cannot know how to pack it.
  model = models.UNet(num_filters=4, depth=2, implementation='tpu_packed')
  x = jnp.zeros((2, 16, 16, 3))
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  shape = jax.export.symbolic_shape('b, 16, 16, 3')
  exported = jax.export.export(
    jax.jit(lambda p, x: model.apply({'params': p}, x)), platforms=['tpu']
  )(params, jax.ShapeDtypeStruct(shape, jnp.float32))
  assert 'x16x16x6x' not in exported.mlir_module()
