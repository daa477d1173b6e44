"""Tests of U-Net / Sharp U-Net: topology, parameter counts, shapes, CLI."""

import logging
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default as configs_default
from configs import isic as configs_isic
from sharp_unet_jax.model import models, network
from sharp_unet_jax.training import restore

PLATFORMS = ('cpu', 'tpu', 'gpu')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def param_shapes(name, channels, classes, size=64, **kwargs):
  model = models.MODELS[name](num_classes=classes, **kwargs)
  x = jnp.zeros((1, size, size, channels))
  return jax.eval_shape(model.init, jax.random.key(0), x)['params']


@pytest.mark.parametrize('name', ['unet', 'sharp_unet'])
@pytest.mark.parametrize(
  'channels,classes,expected',
  [(3, 1, 7_760_097), (1, 1, 7_759_521), (1, 4, 7_759_620)],
)
def test_trainable_parameter_counts_match_the_paper(name, channels, classes, expected):
  assert models.count_params(param_shapes(name, channels, classes)) == expected


def test_sharp_kernel_is_not_in_the_parameter_tree():
  sharp = param_shapes('sharp_unet', 3, 1, num_filters=4)
  plain = param_shapes('unet', 3, 1, num_filters=4)
  assert jax.tree_util.tree_structure(sharp) == jax.tree_util.tree_structure(plain)
  assert not any('sharp' in name for name in sharp)


def test_logits_shape_and_dtype():
  # Shapes and dtypes only: traced as a run traces them, nothing compiled (an
  # eager bfloat16 init compiles each random kernel, minutes on a busy CPU).
  model = models.UNet(num_classes=4, num_filters=4, depth=3, dtype=jnp.bfloat16)
  x = jnp.ones((2, 24, 16, 1))
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))
  logits = jax.eval_shape(model.apply, {'params': params}, x)
  assert logits.shape == (2, 24, 16, 4) and logits.dtype == jnp.float32


def init(model, x):
  """The model's parameters for `x`, initialised by one unoptimised program.

  Eager init compiles every random kernel on its own, seconds each on CPU;
  train.Trainer compiles its initialisation the same way (opt level 0).
  """
  options = {'xla_backend_optimization_level': 0}
  return jax.jit(model.init, compiler_options=options)(jax.random.key(0), x)['params']


def hand_sharpened(features):
  """Each channel filtered by the Laplacian sharpening kernel, zero padded."""
  kernel = -np.ones((3, 3))
  kernel[1, 1] = 8.0
  padded = np.pad(features, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros_like(features)
  height, width = features.shape[1:3]
  for di in range(3):
    for dj in range(3):
      out += kernel[di, dj] * padded[:, di : di + height, dj : dj + width]
  return out


@pytest.mark.parametrize('implementation', ['reference', 'cpu_fast'])
def test_each_skip_connection_is_the_hand_sharpened_encoder_output(implementation):
  x = jax.random.uniform(jax.random.key(3), (1, 16, 16, 3))
  model = models.UNet(num_filters=4, depth=2, implementation=implementation)
  params = init(model, x)
  _, state = model.apply({'params': params}, x, mutable=['intermediates'])
  seen = state['intermediates']
  for level in range(2):
    encoder = np.asarray(seen[f'features_{level}'][0])
    skip = np.asarray(seen[f'sharp_{level}'][0])
    np.testing.assert_allclose(skip, hand_sharpened(encoder), rtol=1e-5, atol=1e-5)
  # The plain U-Net with the same parameters concatenates the raw features.
  plain = models.UNet(
    num_filters=4, depth=2, sharp_kernel=None, implementation=implementation
  )
  _, state = plain.apply({'params': params}, x, mutable=['intermediates'])
  assert not any(name.startswith('sharp_') for name in state['intermediates'])


def test_default_initialiser_is_glorot_uniform_with_zero_biases():
  model = models.UNet(num_filters=8, depth=1, sharp_kernel=None)
  params = init(model, jnp.zeros((1, 8, 8, 3)))
  kernel = params['encoder_0']['Conv_1']['kernel']  # 3x3, 8 -> 8
  limit = np.sqrt(6.0 / (9 * 8 + 9 * 8))
  assert float(jnp.abs(kernel).max()) <= limit
  assert float(jnp.abs(kernel).max()) > 0.8 * limit
  assert float(jnp.abs(params['encoder_0']['Conv_1']['bias']).max()) == 0.0


def test_sides_not_divisible_by_two_to_the_depth_are_rejected():
  model = models.UNet(num_filters=4, depth=4)
  with pytest.raises(ValueError, match='divisible by 2\\*\\*depth = 16'):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 40, 48, 3)))


def test_create_model_rejects_unknown_names():
  config = ml_collections.ConfigDict(
    dict(
      model='resnet',
      kernel_init='glorot_uniform',
      num_classes=1,
      num_filters=4,
      depth=2,
      dtype='float32',
      sharp_kernel='laplacian',
    )
  )
  with pytest.raises(ValueError, match="config.model='resnet'"):
    models.create_model(config)
  config.model = 'sharp_unet'
  # A config.json written before the key existed means 'auto'.
  assert models.create_model(config).implementation == 'auto'
  config.implementation = 'fast'
  with pytest.raises(ValueError, match="config.implementation='fast'"):
    models.create_model(config)
  config.implementation = 'auto'
  config.dtype = 'float16'
  with pytest.raises(ValueError, match="config.dtype='float16'"):
    models.create_model(config)


def test_auto_form_is_resolved_where_the_platform_is_known():
  """A trainer's or a local run's programs trace the platform's form alone;
  a model built without a platform (export: several) keeps 'auto'."""
  config = configs_default.get_config()
  forms = {p: models.create_model(config, p).implementation for p in PLATFORMS}
  assert forms == {'cpu': 'cpu_fast', 'tpu': network.AUTO_TPU_FORM, 'gpu': 'auto'}
  restored = restore.Restored(config, models.create_model(config), None, 0, '')
  assert restored.model.implementation == 'auto'
  for platform, form in forms.items():
    assert restored.for_platform(platform).model.implementation == form
  config.implementation = 'reference'
  chosen = restore.Restored(config, models.create_model(config, 'tpu'), None, 0, '')
  assert chosen.model.implementation == 'reference'
  assert chosen.for_platform('cpu').model.implementation == 'reference'


def test_auto_packs_every_tpu_step_on_every_chip():
  """One TPU form for train, eval and predict, whatever the chip: since the
  block-diagonal kernels are concatenated, the packed form is estimated
  below the reference form in every step on v5e and v4
  (docs/performance.md)."""
  config = configs_isic.get_config()
  restored = restore.Restored(config, models.create_model(config), None, 0, '')
  for kind in ('TPU v5 lite', 'TPU v4', None):
    device = types.SimpleNamespace(device_kind=kind)
    assert models.create_model(config, 'tpu', device).implementation == 'tpu_packed'
    assert restored.for_platform('tpu', device).model.implementation == 'tpu_packed'


def test_auto_dtype_is_bfloat16_on_tpu_and_gpu_and_float32_on_cpu():
  assert [models.compute_dtype('auto', p) for p in ('tpu', 'gpu', 'cpu')] == [
    'bfloat16',
    'bfloat16',
    'float32',
  ]
  assert models.compute_dtype('float32', 'tpu') == 'float32'
  assert models.compute_dtype('bfloat16', 'cpu') == 'bfloat16'


def gpu(kind, capability):
  """A device description as JAX gives a CUDA device's."""
  return types.SimpleNamespace(
    platform='gpu', device_kind=kind, compute_capability=capability
  )


def test_auto_dtype_is_float32_on_gpus_without_native_bfloat16(caplog):
  caplog.set_level(logging.INFO)
  t4, v100, a100 = gpu('Tesla T4', '7.5'), gpu('Tesla V100', '7.0'), gpu('A100', '8.0')
  assert models.compute_dtype('auto', 'gpu', t4) == 'float32'
  assert 'float32 on Tesla T4 (compute capability 7.5' in caplog.text
  assert models.compute_dtype('auto', 'gpu', v100) == 'float32'
  assert models.compute_dtype('auto', 'gpu', a100) == 'bfloat16'
  assert models.compute_dtype('auto', 'gpu', gpu('H100', (9, 0))) == 'bfloat16'
  # An explicit dtype is kept; a TPU has no compute capability.
  assert models.compute_dtype('bfloat16', 'gpu', t4) == 'bfloat16'
  assert models.compute_dtype('auto', 'tpu', t4) == 'bfloat16'


def test_summary_cli_prints_trainable_params_last():
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'sharp_unet_jax.model.models',
      '--config=configs/default.py',
      '--config.num_filters=32',
      '--config.num_channels=1',
      '--config.num_classes=4',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=True,
  )
  assert result.stdout.strip().splitlines()[-1] == 'trainable_params=7759620'
  assert 'encoder_0/Conv_0/kernel' in result.stdout
