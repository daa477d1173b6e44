"""The TPU program's form, trained through main.py on 4 CPU devices.

With implementation='auto', TPU programs take the packed form (packed.py):
each device packs its images into the lanes under `shard_map` and repacks
them between levels. Asked for by name, 'tpu_packed' runs the same program
on 4 simulated CPU devices, and here it trains against the reference form.

Depth 4 and 4 filters: a device's 8 images pack 8/8/8/4/2 (levels 0-2 fill
32, 64 and 128 lanes; level 3 and the bottleneck repack into packs of 4 and
2); 6 images pack 2 at every level; 1 image packs none.

Adam's normalisation would turn rounding noise in near-zero gradients into
full-size steps, so the runs use eps = 1, far above the gradients: momentum
SGD with rate learning_rate / eps in effect. Tolerances come from the noise
floor: in float32 (the main.py runs), the reference against itself on 2
devices (main.py's run against its training repeated in-process on 2
devices); in bfloat16 (in-process), bfloat16's own error, the float32
reference.
"""

import copy
import dataclasses
import json
import os
import sys

import jax
import numpy as np
import pytest
from reliability_test import run

from configs import tiny
from sharp_unet_jax import evaluate
from sharp_unet_jax.compilation import meshes
from sharp_unet_jax.data import input_pipeline
from sharp_unet_jax.evaluation import inference, learning_curves
from sharp_unet_jax.training import restore, train

STEPS = 6
FORMS = ('reference', 'tpu_packed', 'cpu_fast')
FLAGS = (
  '--config.num_filters=4',
  '--config.depth=4',
  '--config.batch_size=32',
  '--config.eval_batch_size=32',
  '--config.adam_eps=1',
  '--config.learning_rate=0.1',
  f'--config.num_train_steps={STEPS}',
  '--config.log_every_steps=1',
  f'--config.eval_every_steps={STEPS}',
  f'--config.checkpoint_every_steps={STEPS}',
)


def relative(a, b) -> float:
  """||a - b|| / ||b|| over all leaves of two trees."""
  a = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(a)])
  b = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(b)])
  a, b = a.astype(np.float64), b.astype(np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def train_main(tfds_dir, workdir, form, devices=4):
  """main.py in a process of its own: (losses, final params, test metrics)."""
  command = [
    sys.executable,
    'main.py',
    '--config=configs/tiny.py',
    f'--workdir={workdir}',
    f'--config.data_dir={tfds_dir}',
    f'--config.implementation={form}',
    *FLAGS,
  ]
  result = run(command, devices=devices, timeout=900)
  assert result.returncode == 0, result.stderr[-2000:]
  losses = learning_curves.read_curve(str(workdir), 'train/loss')
  assert sorted(losses) == list(range(1, STEPS + 1))
  with open(os.path.join(workdir, 'test_metrics.json')) as f:
    test_metrics = json.load(f)
  restored = restore.load(str(workdir))
  assert restored.step == STEPS
  return np.array([losses[s] for s in sorted(losses)]), restored, test_metrics


@pytest.fixture(scope='module')
def runs(tfds_dir, tmp_path_factory):
  """{form: (losses, restored, test metrics)} of two main.py runs."""
  return {
    form: train_main(tfds_dir, tmp_path_factory.mktemp(form), form)
    for form in FORMS[:2]
  }


def reference_on_two_devices(tfds_dir):
  """(losses, params) of the reference main.py run's training, repeated in
  this process on 2 of the 4 devices: the same batches
  (input_pipeline.train_batch), the same program, another device count."""
  config = small_config(data_dir=tfds_dir, implementation='reference')
  trainer = train.Trainer(config, meshes.data_mesh(jax.devices()[:2]))
  data = input_pipeline.load_train_split(config)
  batches = [input_pipeline.train_batch(data, config, s) for s in range(STEPS)]
  return train_in_process(trainer, trainer.initial_state(), batches)


def test_main_trains_the_packed_form_as_the_reference_within_the_noise(runs, tfds_dir):
  packed, reference = runs['tpu_packed'], runs['reference']
  # The noise floor: the same program's rounding on another device count.
  other = reference_on_two_devices(tfds_dir)
  noise = {
    'loss': relative(other[0], reference[0]),
    'params': relative(other[1], reference[1].params),
  }
  got = {
    'loss': relative(packed[0], reference[0]),
    'params': relative(packed[1].params, reference[1].params),
  }
  # Another device count reorders only the sums over images; the forms also
  # round each image's sums differently, and a pre-activation within
  # rounding of zero can then fall on the other side of a ReLU
  # (packed_test.py: one such unit moves one kernel's gradient by 5e-3),
  # which 6 steps at rate 0.1 turn into ~1e-6 of the parameters. Measured
  # here: losses 8e-7 (noise 9e-7), parameters 7.5e-7 (noise 1.8e-9); the
  # in-process floor measured the same noise as a main.py run on 2 devices
  # (8.6e-7 and 2.0e-9).
  print(f'main.py: {got} noise {noise}')
  for key, value in got.items():
    assert value <= max(10 * noise[key], 1e-6), (key, got, noise)
  assert packed[1].config.implementation == 'tpu_packed'
  for key in ('dice', 'iou', 'soft_iou', 'loss'):
    np.testing.assert_allclose(packed[2][key], reference[2][key], rtol=1e-4, atol=1e-6)


def small_config(**overrides):
  """tiny.py as the main.py runs above set it, with `overrides`."""
  config = tiny.get_config()
  for flag in FLAGS:
    key, value = flag.removeprefix('--config.').split('=')
    config[key] = type(config[key])(float(value))
  config.update(overrides)
  return config


def with_form(config, form):
  config = copy.deepcopy(config)
  config.implementation = form
  return config


def random_batches(config, count, size=None, seed=0):
  rng = np.random.default_rng(seed)
  shape = (size or config.batch_size, *config.image_size)
  return [
    {
      'image': rng.random((*shape, 3), np.float32),
      'mask': rng.integers(0, max(config.num_classes, 2), shape, np.int32),
    }
    for _ in range(count)
  ]


def train_in_process(trainer, state, batches):
  """(losses, params) after a step on each batch."""
  losses = []
  for batch in batches:
    batch = trainer.global_batch(batch)
    state, step_metrics = trainer.train_step(state, batch)
    losses.append(float(step_metrics.compute()['loss']))
  return np.array(losses), jax.device_get(state.params)


# (model, num_classes, images per device) in bfloat16: with the main.py runs
# (sharp_unet, 1, float32, 8: every level packed, then repacked), each value
# of each option at least once.
CASES = [
  ('unet', 3, 6),
  ('sharp_unet', 3, 1),
]


@pytest.mark.parametrize('model,num_classes,per_device', CASES)
def test_bfloat16_train_steps_of_both_forms_agree_within_bfloat16s_error(
  model, num_classes, per_device
):
  config = small_config(
    model=model, num_classes=num_classes, dtype='bfloat16', batch_size=4 * per_device
  )
  reference, packed = (train.Trainer(with_form(config, f)) for f in FORMS[:2])
  batches = random_batches(config, STEPS)
  got = {'reference': train_in_process(reference, reference.initial_state(), batches)}
  # bfloat16 keeps 8 significant bits, and the forms round their sums at
  # different points (a packed convolution's contraction is wider), which
  # reordering the batch does not show. The yardstick is bfloat16's own
  # error: the forms must differ by less than the reference in bfloat16
  # differs from the reference in float32.
  exact = with_form(config, 'reference')
  exact.dtype = 'float32'
  exact = train.Trainer(exact)
  got['float32'] = train_in_process(exact, exact.initial_state(), batches)
  state = reference.initial_state().replace(apply_fn=packed.model.apply)
  got['packed'] = train_in_process(packed, state, batches)
  for i, key in enumerate(('losses', 'params')):
    noise = relative(got['float32'][i], got['reference'][i])
    error = relative(got['packed'][i], got['reference'][i])
    print(f'{model} {num_classes} {per_device}: {key} {error:.2e} noise {noise:.2e}')
    assert error <= max(noise, 1e-6), (key, error, noise)


def restored_as(restored, form):
  """The restored checkpoint, computed in `form`."""
  model = restored.model.clone(implementation=form)
  config = with_form(restored.config, form)
  return dataclasses.replace(restored, model=model, config=config)


@pytest.fixture(scope='module')
def checkpoint(runs):
  """The reference main.py run's final checkpoint, as restore.load reads it."""
  return runs['reference'][1]


def test_eval_step_metrics_equal_on_the_same_checkpoint(checkpoint):
  # 24 images, 6 per device (packs of 2), the last 5 of them padding.
  batch = random_batches(checkpoint.config, 1, size=24)[0]
  batch['valid'] = (np.arange(24) < 19).astype(np.float32)
  values = {}
  for form in FORMS[:2]:
    trainer = train.Trainer(with_form(checkpoint.config, form))
    step_metrics = trainer.eval_step(checkpoint.params, trainer.global_batch(batch))
    values[form] = jax.device_get(step_metrics.compute())
  assert values['reference'].keys() == values['tpu_packed'].keys()
  for key, value in values['reference'].items():
    np.testing.assert_allclose(values['tpu_packed'][key], value, rtol=1e-5, err_msg=key)


@pytest.fixture(scope='module')
def predictors(checkpoint):
  """{form: TiledPredictor} of 32x32 tiles, 24 per call (6 per device)."""
  mesh = meshes.data_mesh()
  return {
    form: inference.TiledPredictor(
      restored_as(checkpoint, form).apply,
      checkpoint.params,
      num_classes=1,
      depth=4,
      tile_size=(32, 32),
      overlap=8,
      tile_batch=24,
      mesh=mesh,
    )
    for form in FORMS
  }


def test_tiled_predictions_equal_with_a_tile_batch_that_fills_no_pack(predictors):
  # 2 x 3 tiles of 32x32: device 0 gets all 6 (3 packs of 2), the rest of
  # the batch is padding.
  pixels = np.random.default_rng(1).integers(0, 256, (40, 72, 3), np.uint8)
  assert len(predictors['reference'].tiles(40, 72)) == 6
  expected = predictors['reference'].predict(pixels)
  got = predictors['tpu_packed'].predict(pixels)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert 0.01 < expected.std()


def spoiled(images, index, value):
  """`images` with one pixel of image `index` set to `value`."""
  images = np.array(images)
  images[index, 5, 7, 1] = value
  return images


@pytest.mark.parametrize('value', [np.nan, np.inf])
def test_a_non_finite_tile_leaves_the_other_tiles_unchanged(predictors, value):
  tiles = np.random.default_rng(2).random((24, 32, 32, 3), np.float32)
  for form, predictor in predictors.items():
    window = predictor._window  # pylint: disable=protected-access
    forward = predictor._forward  # pylint: disable=protected-access
    clean = np.asarray(forward(predictor._params, tiles, window))
    # Tile 1 shares a pack with tile 0 in the packed form.
    bad = np.asarray(forward(predictor._params, spoiled(tiles, 1, value), window))
    assert not np.isfinite(bad[1]).all(), form
    others = np.arange(24) != 1
    np.testing.assert_array_equal(bad[others], clean[others], err_msg=form)


def test_a_non_finite_image_leaves_the_others_scores_unchanged(checkpoint):
  # evaluate.py's forward pass over a padded batch of 32, 8 per device.
  images = np.random.default_rng(3).random((32, 32, 32, 3), np.float32)
  for form in FORMS:
    restored = restored_as(checkpoint, form)
    forward = evaluate._forward(restored, meshes.data_mesh())  # noqa: SLF001
    labels, probabilities = jax.device_get(forward(restored.params, images))
    bad_labels, bad_probabilities = jax.device_get(
      forward(restored.params, spoiled(images, 9, np.nan))
    )
    assert not np.isfinite(bad_probabilities[9]).all(), form
    others = np.arange(32) != 9
    np.testing.assert_array_equal(bad_labels[others], labels[others], err_msg=form)
    np.testing.assert_array_equal(
      bad_probabilities[others], probabilities[others], err_msg=form
    )
