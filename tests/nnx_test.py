"""Tests of the NNX SharpBlock and UNet: the Linen modules' options, parameter
tree and numbers, the bridge both ways, and the README's training example."""

import dataclasses
import functools
import inspect
import pathlib
import re

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import isic
from sharp_unet_jax import nnx as sharp_nnx
from sharp_unet_jax.model import models, nnx_unet, sharp_block
from sharp_unet_jax.training import checkpointing

ROOT = pathlib.Path(__file__).resolve().parents[1]
INIT = models.INITIALIZERS

# (models.MODELS name, models.UNet options): together they set every option
# to a value other than its default (test_the_cases_cover_every_option).
LAPLACE_4 = [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
CASES = [
  ('sharp_unet', dict(depth=2, num_filters=4)),
  ('unet', dict(depth=1, num_filters=4, num_classes=3, implementation='reference')),
  (
    'sharp_unet',
    dict(depth=3, num_filters=2, sharp_kernel='sharpen', implementation='reference'),
  ),
  (
    'sharp_unet',
    dict(
      depth=2, num_filters=4, implementation='cpu_fast', kernel_init=INIT['he_normal']
    ),
  ),
  (
    'sharp_unet',
    dict(depth=2, num_filters=4, sharp_kernel=LAPLACE_4, implementation='tpu_packed'),
  ),
  ('sharp_unet', dict(depth=2, num_filters=4, dtype=jnp.bfloat16, sharp_kernel='blur')),
]


@pytest.fixture(autouse=True, scope='module')
def cheap_random_numbers():
  """RngBitGenerator keys: XLA:CPU compiles threefry's random numbers for each
  shape, about 8x the CPU time of the whole initialisation (measured)."""
  previous = jax.config.jax_default_prng_impl
  jax.config.update('jax_default_prng_impl', 'rbg')
  yield
  jax.config.update('jax_default_prng_impl', previous)


def images(shape=(4, 16, 16, 3), seed=1):
  return jax.random.uniform(jax.random.key(seed), shape)


def linen_and_nnx(name, options, x):
  """A Linen model, its parameters and the NNX model holding them."""
  module = models.MODELS[name](**options)
  # Random parameters of the Linen tree's shapes (cheaper than module.init).
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)['params']
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(
    lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), jnp.float32), shapes
  )
  return module, params, sharp_nnx.from_linen(module, params)


def keyword_defaults(cls) -> dict:
  """{name: default} of an NNX module's arguments, but in_features and rngs."""
  parameters = inspect.signature(cls.__init__).parameters.values()
  skip = ('self', 'in_features', 'rngs')
  return {p.name: p.default for p in parameters if p.name not in skip}


def field_defaults(cls) -> dict:
  fields = dataclasses.fields(cls)
  return {f.name: f.default for f in fields if f.name not in ('parent', 'name')}


@pytest.mark.parametrize(
  'linen,nnx_module',
  [(models.UNet, sharp_nnx.UNet), (sharp_block.SharpBlock, sharp_nnx.SharpBlock)],
)
def test_the_nnx_modules_take_the_linen_options_with_their_defaults(linen, nnx_module):
  assert keyword_defaults(nnx_module) == field_defaults(linen)


def test_the_cases_cover_every_option():
  defaults = field_defaults(models.UNet)
  changed = set()
  for name, options in CASES:
    module = models.MODELS[name](**options)
    changed |= {o for o in defaults if getattr(module, o) != defaults[o]}
  assert changed == set(defaults) == set(nnx_unet.UNET_OPTIONS)
  assert {name for name, _ in CASES} == set(models.MODELS)


@pytest.mark.parametrize('name,options', CASES)
def test_nnx_logits_equal_linen_logits_on_the_same_parameters(name, options):
  x = images()
  module, params, model = linen_and_nnx(name, options, x)
  expected = module.apply({'params': params}, x)
  logits = model(x)
  assert logits.shape == expected.shape and logits.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(logits - expected))) <= 1e-6
  # The parameters went in and come out unchanged, in the Linen tree.
  back = sharp_nnx.linen_params(model)
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, back, params))


def test_nnx_gradients_equal_linen_gradients():
  x = images()
  labels = (x[..., :1] > 0.5).astype(jnp.float32)
  options = dict(num_filters=4, depth=2, implementation='reference')
  module, params, model = linen_and_nnx('sharp_unet', options, x)

  def loss(logits):
    return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

  expected = jax.grad(lambda p: loss(module.apply({'params': p}, x)))(params)
  grads = nnx.to_pure_dict(nnx.grad(lambda m: loss(m(x)))(model))
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(expected)
  for got, want in zip(
    jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected)
  ):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(grads)) > 1e-4


def test_state_holds_only_the_learnable_weights_the_linen_count():
  config = isic.get_config()
  abstract = nnx.eval_shape(lambda: sharp_nnx.create_model(config, rngs=nnx.Rngs(0)))
  state = jax.tree_util.tree_leaves(nnx.state(abstract))
  params = jax.tree_util.tree_leaves(nnx.state(abstract, nnx.Param))
  assert len(state) == len(params)
  count = sum(int(np.prod(p.shape)) for p in params)
  init = functools.partial(models.init_params, models.create_model(config), config)
  linen = jax.eval_shape(init, jax.random.key(0))
  assert count == models.count_params(linen) == 7_760_097
  # The same paths and shapes as the Linen tree.
  shapes = jax.tree_util.tree_map(
    lambda p: p.shape, nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
  )
  assert shapes == jax.tree_util.tree_map(lambda p: p.shape, linen)


@pytest.mark.parametrize('name', sorted(INIT))
def test_nnx_initialises_with_the_named_initialiser(name):
  model = sharp_nnx.UNet(
    3, depth=2, num_filters=4, kernel_init=INIT[name], rngs=nnx.Rngs(0)
  )
  # 3x3, 8 -> 16 channels: fan-in and fan-out differ, so the three
  # initialisers' standard deviations differ by 1.2x or more.
  kernel = model.bottleneck.Conv_0.kernel[...]
  sample = INIT[name](jax.random.key(1), kernel.shape, jnp.float32)
  assert kernel.shape == (3, 3, 8, 16)
  assert float(jnp.std(kernel)) == pytest.approx(float(jnp.std(sample)), rel=0.1)
  assert float(jnp.abs(model.bottleneck.Conv_0.bias[...]).max()) == 0.0


def test_load_linen_params_refuses_another_tree():
  model = nnx.eval_shape(lambda: sharp_nnx.UNet(3, depth=2, rngs=nnx.Rngs(0)))
  other = jax.eval_shape(
    models.UNet(depth=2, num_filters=8).init, jax.random.key(0), images()
  )
  with pytest.raises(ValueError, match='do not fit the NNX UNet'):
    sharp_nnx.load_linen_params(model, other['params'])


def test_a_training_checkpoint_loads_into_the_nnx_model(tmp_path):
  x = images()
  trained = sharp_nnx.UNet(3, num_filters=4, depth=2, rngs=nnx.Rngs(1))
  manager = checkpointing.create_manager(str(tmp_path))
  checkpointing.save(manager, 5, {'params': sharp_nnx.linen_params(trained), 'step': 5})
  manager.wait_until_finished()
  fresh = sharp_nnx.UNet(3, num_filters=4, depth=2, rngs=nnx.Rngs(2))
  assert float(jnp.max(jnp.abs(fresh(x) - trained(x)))) > 1e-3
  target = sharp_nnx.linen_params(fresh)
  params = checkpointing.restore_params(
    checkpointing.checkpoint_dir(str(tmp_path)), 5, target
  )
  sharp_nnx.load_linen_params(fresh, params)
  assert float(jnp.max(jnp.abs(fresh(x) - trained(x)))) == 0.0


@pytest.mark.parametrize('kernel', ['laplacian', 'sharpen', 'blur', np.eye(3)])
@pytest.mark.parametrize('implementation', ['conv', 'shifted_sum'])
@pytest.mark.parametrize('dtype', [None, jnp.bfloat16])
def test_nnx_sharp_block_equals_linen_and_has_no_state(kernel, implementation, dtype):
  x = images((2, 8, 8, 5))
  options = dict(dtype=dtype, implementation=implementation)
  block = sharp_nnx.SharpBlock(kernel, **options)
  linen = sharp_block.SharpBlock(kernel, **options)
  expected = linen.apply(linen.init(jax.random.key(0), x), x)
  assert jax.tree_util.tree_leaves(nnx.state(block)) == []
  out = block(x)
  assert out.dtype == expected.dtype
  assert float(jnp.max(jnp.abs(out - expected).astype(jnp.float32))) <= 1e-6


def test_a_bad_kernel_fails_when_the_nnx_module_is_built():
  with pytest.raises(ValueError, match='Unknown sharp kernel'):
    sharp_nnx.SharpBlock('edge')
  with pytest.raises(ValueError, match='must be 3x3'):
    sharp_nnx.UNet(
      3, sharp_kernel=np.ones((5, 5)), depth=1, num_filters=2, rngs=nnx.Rngs(0)
    )


def documented_nnx_example() -> str:
  """The python block of the README (or docs/) that trains with nnx.Optimizer."""
  for path in [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]:
    for block in re.findall(r'```python\n(.*?)```', path.read_text(), re.S):
      if 'nnx.Optimizer' in block:
        return block
  raise AssertionError('no documented NNX training example')


def test_the_documented_nnx_example_trains():
  namespace = {}
  exec(compile(documented_nnx_example(), 'README NNX example', 'exec'), namespace)
  losses = namespace['losses']
  assert len(losses) >= 3 and losses[-1] < losses[0]
