"""The TPU form (images packed in the lanes) computes what the reference does.

Checked here on CPU by asking for implementation='tpu_packed' explicitly;
'auto' picks it only in programs compiled for TPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sharp_unet_jax.compilation import hlo_stats, meshes, xla_options
from sharp_unet_jax.model import models, network, packed


def relative_error(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def ravel(tree) -> np.ndarray:
  return np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(tree)])


def random(seed, shape):
  """Normal samples from numpy: eager jax.random compiles threefry per shape."""
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


def init(model, x):
  """`model`'s initial parameters for `x`, jitted as train.Trainer jits them:
  unoptimised on CPU (xla_options.init_options), where optimising threefry's
  many kernels costs ~15x the U-Net's gradient's compile (measured)."""
  options = xla_options.init_options('cpu')
  return jax.jit(model.init, compiler_options=options)(jax.random.key(0), x)['params']


# (filters, batch): 5 filters and a batch of 8 pack 8 images at levels 0-1
# (5 and 10 channels), 4 at level 2 (20), 2 at level 3 (40) and none in the
# bottleneck (80); 24 filters and a batch of 4 pack 4 images at level 0, 2 at
# level 1 (48) and none below.
CASES = {(5, 8): [8, 8, 4, 2, 1], (24, 4): [4, 2, 1, 1, 1]}


# Each packing once, one with the Sharp block, one without: the Sharp block
# filters each channel alone, so it sees no packing, and
# test_forms_agree_in_float64... runs it on packs 8/8/4/2/1 as well (and
# packed_training_test.py both models on packs 8/8/8/4/2, 2 and 1).
@pytest.mark.parametrize(
  'filters,batch,sharp_kernel', [(5, 8, 'laplacian'), (24, 4, None)]
)
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
  params = init(reference, x)
  # The same parameter tree and initial values.
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, init(packed_model, x))

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
  params = init(model, x)
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


def pool_choice(features):
  """The corner (0-3, row-major) of each 2x2 window of NHWC `features` that
  holds its first maximum, the one max-pool's gradient goes to."""
  n, h, w, c = features.shape
  windows = np.asarray(features).reshape(n, h // 2, 2, w // 2, 2, c)
  return windows.transpose(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, c, 4).argmax(-1)


def test_forms_agree_in_float64_and_in_float32_up_to_a_relu_at_zero():
  # The reported case: 6 filters, depth 4, 32x32x3, a binary head and 8
  # images (packs 8/8/4/2/1), on the reference's initial parameters, where
  # encoder_0's float32 gradient differed by a few 1e-3 between the forms.
  x = jax.random.uniform(jax.random.key(3), (8, 32, 32, 3))
  labels = jax.random.bernoulli(jax.random.key(4), 0.5, (8, 32, 32, 1))
  reference = models.UNet(num_classes=1, num_filters=6, implementation='reference')
  params = init(reference, x[:1])

  def grads(form, dtype):
    """(gradient, level 0's encoder output: the max-pool's input)."""
    model = reference.clone(implementation=form, dtype=dtype)

    def loss(p, x):
      logits, state = model.apply({'params': p}, x, mutable=['intermediates'])
      ce = optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype))
      return jnp.mean(ce), state['intermediates']['features_0'][0]

    cast = lambda t: jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), t)  # noqa: E731
    return jax.device_get(jax.jit(jax.grad(loss, has_aux=True))(cast(params), cast(x)))

  with jax.enable_x64(True):
    exact = grads('reference', jnp.float64)
    packed_exact = grads('tpu_packed', jnp.float64)
  # Without rounding, the forms are the same function.
  assert relative_error(ravel(packed_exact[0]), ravel(exact[0])) < 1e-13
  rounded = {form: grads(form, jnp.float32) for form in ('tpu_packed', 'reference')}
  # In float32, a form's gradient strays from the exact one only through
  # the units of level 0 whose ReLU (zero or not) differs from float64's,
  # and there only where the pre-activation is within rounding of zero; no
  # max-pool at level 0 routes its gradient to another corner.
  scale = np.abs(exact[1]).max()
  for form, (grad, features) in rounded.items():
    flipped = (features > 0) != (exact[1] > 0)
    assert np.array_equal(pool_choice(features), pool_choice(exact[1])), form
    assert np.abs(features[flipped]).max(initial=0) < 1e-6 * scale, form
    assert np.abs(exact[1][flipped]).max(initial=0) < 1e-6 * scale, form
    for name in grad:
      error = relative_error(ravel(grad[name]), ravel(exact[0][name]))
      assert error < (1e-5 if name != 'encoder_0' or not flipped.any() else 1), name
  # (On this project's host the reference form's float32 turns one such
  # unit positive, so its encoder_0 gradient differs from float64's, and
  # from the packed form's, by 5e-3; the packed form's by 1.5e-7.)
