"""Keras -> Flax weight import: outputs agree, mismatches are named."""

import dataclasses
import json
import os
import subprocess
import sys

import h5py
import jax
import numpy as np
import pytest

from configs import tiny
from sharp_unet_jax import convert_keras
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.interop import keras_io
from sharp_unet_jax.training import checkpointing, restore, train

pytest.importorskip('keras')  # An optional extra; an error in our code still fails.
from sharp_unet_jax.interop import keras_reference  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def paper_model(num_classes, depth, sharp=True, num_filters=4, seed=0):
  """The paper's Keras model with random weights (biases too), sharp kernels kept."""
  model = keras_reference.build_keras_unet(
    (32, 32, 3), num_classes, num_filters=num_filters, depth=depth, sharp=sharp
  )
  rng = np.random.RandomState(seed)
  model.set_weights(
    [
      value if 'sharp' in variable.path else rng.normal(0, 0.3, value.shape)
      for variable, value in zip(model.weights, model.get_weights())
    ]
  )
  return model


def config_for(num_classes, depth, sharp=True, num_filters=4):
  config = tiny.get_config()
  config.num_classes = num_classes
  config.depth = depth
  config.num_filters = num_filters
  config.model = 'sharp_unet' if sharp else 'unet'
  return config


def expected_shapes(config):
  from sharp_unet_jax.model import models  # noqa: PLC0415

  target = restore.abstract_params(models.create_model(config), config)
  return {
    convert_keras._path_name(path): leaf.shape
    for path, leaf in jax.tree_util.tree_leaves_with_path(target)
  }


def probabilities(restored, images):
  logits = restored.apply(restored.params, images)
  if restored.config.num_classes == 1:
    return jax.nn.sigmoid(logits)
  return jax.nn.softmax(logits, axis=-1)


def assert_same_outputs(keras_model, workdir):
  restored = restore.load(workdir)
  assert restored.step == 0
  images = np.random.RandomState(1).uniform(size=(3, 32, 32, 3)).astype(np.float32)
  want = np.asarray(keras_model(images))
  got = np.asarray(probabilities(restored, images))
  assert got.shape == want.shape
  assert want.std() > 1e-3  # Not a saturated, constant output.
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_binary_depth4_h5_through_the_command_line(tmp_path):
  model = paper_model(num_classes=1, depth=4)
  path = str(tmp_path / 'paper.h5')
  model.save(path)
  workdir = str(tmp_path / 'converted')
  command = [
    sys.executable,
    '-m',
    'sharp_unet_jax.convert_keras',
    f'--keras_model={path}',
    f'--config={ROOT}/configs/tiny.py',
    '--config.depth=4',
    f'--workdir={workdir}',
  ]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert 'Converted' in done.stdout
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['depth'] == 4
  assert_same_outputs(model, workdir)


def test_four_classes_keras_format(tmp_path):
  model = paper_model(num_classes=4, depth=2)
  path = str(tmp_path / 'paper.keras')
  model.save(path)
  workdir = str(tmp_path / 'converted')
  config = config_for(4, 2)
  converted = convert_keras.convert(path, config, workdir)
  assert_same_outputs(model, workdir)
  # Training resumes from it: the checkpoint restores into the train state.
  trainer = train.Trainer(config)
  manager = checkpointing.create_manager(workdir)
  state = checkpointing.restore(manager, trainer.initial_state())
  assert int(state.step) == 0
  for a, b in zip(
    jax.tree_util.tree_leaves(converted), jax.tree_util.tree_leaves(state.params)
  ):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(UserError, match='already holds checkpoints'):
    convert_keras.convert(path, config_for(4, 2), workdir)


def keras2_style_copy(source, target):
  """Rewrites a Keras 3 .h5 the way Keras 2 laid it out (names, inbound nodes)."""
  with h5py.File(source, 'r') as src, h5py.File(target, 'w') as dst:
    config = json.loads(src.attrs['model_config'])
    for layer in config['config']['layers']:
      names = list(keras_io._inbound_names(layer.get('inbound_nodes', [])))
      layer['inbound_nodes'] = [[[name, 0, 0, {}] for name in names]] if names else []
    dst.attrs['model_config'] = json.dumps(config)
    dst.attrs['keras_version'] = '2.4.0'
    dst.attrs['training_config'] = json.dumps({'metrics': ['jacard', 'dice_coef']})
    weights = dst.create_group('model_weights')
    for name, group in src['model_weights'].items():
      out = weights.create_group(name)
      renamed = []
      for weight_name in group.attrs.get('weight_names', []):
        layer, role = weight_name.split('/')
        role = 'depthwise_kernel' if layer.startswith('sharp') else role
        new_name = f'{layer}/{role}:0'
        out[new_name] = group[weight_name][()]
        renamed.append(new_name.encode())
      out.attrs['weight_names'] = renamed


def test_h5py_reader_matches_keras_and_reads_keras2_layout(tmp_path):
  model = paper_model(num_classes=1, depth=2)
  path = str(tmp_path / 'paper.h5')
  model.save(path)
  config = config_for(1, 2)
  shapes = expected_shapes(config)
  by_keras = convert_keras.convert_params(
    keras_io.read_keras_model(path), config, shapes
  )
  old = str(tmp_path / 'keras2.h5')
  keras2_style_copy(path, old)
  for layers in (
    keras_io.read_keras_model(path, use_keras=False),
    keras_io._read_h5(old),
  ):
    by_h5py = convert_keras.convert_params(layers, config, shapes)
    assert by_h5py.keys() == by_keras.keys() == shapes.keys()
    for key, value in by_keras.items():
      np.testing.assert_array_equal(by_h5py[key], value)


def test_concat_of_skip_first_swaps_decoder_input_channels(tmp_path):
  model = paper_model(num_classes=1, depth=2)
  path = str(tmp_path / 'paper.keras')
  model.save(path)
  config = config_for(1, 2)
  shapes = expected_shapes(config)
  layers = keras_io.read_keras_model(path)
  reference = convert_keras.convert_params(layers, config, shapes)
  reordered = []
  for layer in layers:
    if layer.kind == 'Concatenate':
      layer = dataclasses.replace(layer, inbound=layer.inbound[::-1])
    elif layer.name.startswith('decoder_') and layer.name.endswith('Conv_0'):
      weights = dict(
        layer.weights, kernel=convert_keras._swap_halves(layer.weights['kernel'])
      )
      layer = dataclasses.replace(layer, weights=weights)
    reordered.append(layer)
  swapped = convert_keras.convert_params(reordered, config, shapes)
  changed = [a.name for a, b in zip(layers, reordered) if a is not b]
  assert changed == ['concat_1', 'decoder_1_Conv_0', 'concat_0', 'decoder_0_Conv_0']
  for key, value in reference.items():
    np.testing.assert_array_equal(swapped[key], value)


def test_mismatches_are_reported_by_layer_name_and_shape(tmp_path):
  model = paper_model(num_classes=1, depth=2)
  path = str(tmp_path / 'paper.keras')
  model.save(path)
  layers = keras_io.read_keras_model(path)

  def error(config):
    with pytest.raises(UserError) as raised:
      convert_keras.convert_params(layers, config, expected_shapes(config))
    return str(raised.value)

  wider = error(config_for(1, 2, num_filters=8))
  assert "layer 'encoder_0_Conv_0' (Conv2D) kernel (3, 3, 3, 4)" in wider
  assert 'encoder_0/Conv_0 kernel (3, 3, 3, 8)' in wider
  assert 'Architecture mismatch' in wider and 'more' in wider

  assert 'depth=4 needs 19, 4 and 4' in error(config_for(1, 4))
  assert 'model=unet depth=2 needs 11, 2 and 0' in error(config_for(1, 2, sharp=False))
  classes = error(config_for(3, 2))
  assert "'head' (Conv2D) kernel (1, 1, 4, 1)" in classes
  assert "has activation='sigmoid', expected linear or softmax" in classes

  blur = config_for(1, 2)
  blur.sharp_kernel = 'blur'
  assert "layer 'sharp_1' (DepthwiseConv2D) kernel differs" in error(blur)
  with pytest.raises(UserError, match='is not a file'):
    keras_io.read_keras_model(str(tmp_path / 'missing.h5'))
  (tmp_path / 'junk.h5').write_bytes(b'not a model')
  with pytest.raises(UserError, match='junk.h5 as a Keras model'):
    keras_io.read_keras_model(str(tmp_path / 'junk.h5'))
