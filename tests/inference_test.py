"""Overlap-tile inference: mirroring, tiling, blending, TTA, sizes and memory."""

import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import tiny
from sharp_unet_jax.data import input_pipeline
from sharp_unet_jax.evaluation import inference
from sharp_unet_jax.model import models

TILE = (32, 32)


def blob_images(rng, count, height, width):
  """Bright discs on a darker noisy background, and their masks."""
  yy, xx = np.mgrid[:height, :width]
  masks = np.zeros((count, height, width), bool)
  for mask in masks:
    for _ in range(rng.integers(1, 4)):
      cy, cx = rng.uniform(0, height), rng.uniform(0, width)
      mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(3, 9) ** 2
  images = 60 + 120 * masks[..., None] + rng.normal(0, 20, (count, height, width, 3))
  return np.clip(images, 0, 255).astype(np.uint8), masks.astype(np.int32)


def init_params(model, shape, seed=0):
  # Unoptimised compilation: initialisation runs once (see train.Trainer).
  init = jax.jit(
    lambda key: model.init(key, jnp.zeros(shape))['params'],
    compiler_options={'xla_backend_optimization_level': 0},
  )
  return init(jax.random.key(seed))


@pytest.fixture(scope='module')
def trained():
  """configs/tiny.py's model, trained briefly to find the discs (confidently)."""
  config = tiny.get_config()
  model = models.create_model(config)
  params = init_params(model, (1, 32, 32, 3))
  optimizer = optax.adam(1e-2)
  state = optimizer.init(params)

  @jax.jit
  def step(params, state, images, masks):
    def loss(p):
      logits = model.apply({'params': p}, images)[..., 0]
      return optax.sigmoid_binary_cross_entropy(logits, masks).mean()

    grads = jax.grad(loss)(params)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(params, updates), state

  rng = np.random.default_rng(0)
  for _ in range(120):
    images, masks = blob_images(rng, 8, 32, 32)
    params, state = step(params, state, input_pipeline.normalize(images), masks)
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x))
  return apply, params


def whole_image_probabilities(apply, params, pixels):
  logits = apply(params, input_pipeline.normalize(pixels)[None])
  return np.asarray(jax.nn.sigmoid(logits))[0]


@pytest.mark.parametrize('length', [1, 2, 5, 13])
def test_mirror_indices_match_numpy_symmetric_padding(length):
  signal = np.arange(length)
  before, after = 3 * length + 2, 2 * length + 5
  padded = np.pad(signal, (before, after), mode='symmetric')
  indices = inference.mirror_indices(-before, len(padded), length)
  np.testing.assert_array_equal(signal[indices], padded)


@pytest.mark.parametrize('length', [1, 20, 31, 32, 33, 100, 1000])
@pytest.mark.parametrize('overlap', [0, 8, 16])
def test_tiles_cover_the_margin_and_overlap_enough(length, overlap):
  tile = 32
  starts = inference.tile_starts(length, tile, overlap)
  margin = overlap // 2
  if length + 2 * margin <= tile:
    assert len(starts) == 1 and starts[0] <= 0 and starts[0] + tile >= length
    return
  assert starts[0] == -margin and starts[-1] + tile == length + margin
  assert np.all(np.diff(starts) <= tile - overlap)
  assert np.all(np.diff(starts) > 0)


def test_blend_windows():
  gaussian = inference.window_1d(32, 'gaussian')
  assert gaussian.max() == pytest.approx(1.0) and gaussian.min() > 0
  np.testing.assert_allclose(gaussian, gaussian[::-1])
  assert gaussian[0] < 0.05 < 0.9 < gaussian[15]
  np.testing.assert_array_equal(inference.window_1d(32, 'constant'), np.ones(32))


@pytest.mark.parametrize(
  'blend, shape', [('gaussian', (96, 96)), ('constant', (64, 112))]
)
def test_tiled_agrees_with_whole_image_prediction(trained, blend, shape):
  apply, params = trained
  images, masks = blob_images(np.random.default_rng(1), 1, *shape)
  whole = whole_image_probabilities(apply, params, images[0])
  assert np.mean((whole[..., 0] > 0.5) == masks[0]) > 0.97  # The model works.
  predictor = inference.TiledPredictor(
    apply, params, num_classes=1, depth=2, tile_size=TILE, overlap=16, blend=blend
  )
  assert len(predictor.tiles(*shape)) > 4  # Really tiled.
  tiled = predictor.predict(images[0])
  agreement = np.mean((tiled[..., 0] > 0.5) == (whole[..., 0] > 0.5))
  assert agreement >= 0.99


def test_output_size_equals_input_size_and_one_compilation(trained):
  apply, params = trained
  predictor = inference.TiledPredictor(
    apply, params, num_classes=1, depth=2, tile_size=TILE, overlap=8, tile_batch=3
  )
  rng = np.random.default_rng(2)
  for shape in [(1, 1), (5, 37), (31, 33), (33, 65), (70, 9)]:
    pixels = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    probabilities = predictor.predict(pixels)
    assert probabilities.shape == (*shape, 1)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert inference.to_labels(probabilities, 1).shape == shape
  assert predictor.compile_count() == 1


def test_flip_tta_averages_the_flipped_predictions(trained):
  apply, params = trained
  pixels = blob_images(np.random.default_rng(3), 1, *TILE)[0][0]
  predictor = inference.TiledPredictor(
    apply, params, num_classes=1, depth=2, tile_size=TILE, overlap=0, tta='flips'
  )
  expected = np.mean(
    [
      whole_image_probabilities(apply, params, pixels),
      whole_image_probabilities(apply, params, pixels[::-1])[::-1],
      whole_image_probabilities(apply, params, pixels[:, ::-1])[:, ::-1],
      whole_image_probabilities(apply, params, pixels[::-1, ::-1])[::-1, ::-1],
    ],
    axis=0,
  )
  np.testing.assert_allclose(predictor.predict(pixels), expected, atol=1e-5)


def test_multi_class_single_tile_matches_whole_image_argmax():
  model = models.UNet(num_classes=3, num_filters=2, depth=1, sharp_kernel=None)
  params = init_params(model, (1, 16, 16, 1), seed=1)
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x))
  pixels = np.random.default_rng(4).integers(0, 65536, (16, 16, 1), dtype=np.uint16)
  predictor = inference.TiledPredictor(
    apply, params, num_classes=3, depth=1, tile_size=(16, 16), overlap=0
  )
  probabilities = predictor.predict(pixels)
  assert probabilities.shape == (16, 16, 2)
  logits = apply(params, input_pipeline.normalize(pixels)[None])[0]
  np.testing.assert_allclose(
    inference.all_classes(probabilities), jax.nn.softmax(logits), atol=1e-5
  )
  # Compare labels where the top two classes are not (nearly) tied.
  top_two = np.sort(np.asarray(logits), axis=-1)[..., -2:]
  clear = top_two[..., 1] - top_two[..., 0] > 1e-4
  assert clear.mean() > 0.5
  labels = inference.to_labels(probabilities, 3)
  np.testing.assert_array_equal(labels[clear], np.argmax(logits, axis=-1)[clear])


def test_to_labels_uses_the_implied_background():
  foreground = np.array([[[0.2, 0.3], [0.5, 0.1], [0.1, 0.6]]], np.float32)
  np.testing.assert_array_equal(inference.to_labels(foreground, 3), [[0, 1, 2]])
  binary = np.array([[[0.5], [0.51]]], np.float32)
  np.testing.assert_array_equal(inference.to_labels(binary, 1), [[0, 1]])


def test_host_memory_is_bounded_by_the_tile_batch():
  """Host allocations stay near the canvas size: no array of all tiles."""

  def cheap_model(params, images):
    return jnp.mean(images, axis=-1, keepdims=True) - params

  predictor = inference.TiledPredictor(
    cheap_model, jnp.float32(0.5), num_classes=1, depth=4, tile_size=(256, 256)
  )
  pixels = np.full((2048, 2048, 3), 200, np.uint8)
  predictor.predict(pixels[:64, :64])  # Compile outside the measurement.
  tracemalloc.start()
  probabilities = predictor.predict(pixels)
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  canvas = probabilities.nbytes  # 16 MiB
  # A batch of 4 float32 tiles is 3 MiB; all 100 tiles at once would take
  # 75 MiB as uint8 and 300 MiB as float32.
  assert peak < 2 * canvas
  expected = 1 / (1 + np.exp(-(200 / 255 - 0.5)))
  np.testing.assert_allclose(probabilities, expected, rtol=1e-5)


@pytest.mark.parametrize(
  'kwargs, message',
  [
    ({'tile_size': (30, 32)}, 'multiples of 2\\*\\*depth = 4'),
    ({'overlap': 32}, 'overlap=32'),
    ({'tile_batch': 0}, 'tile_batch'),
    ({'blend': 'cosine'}, 'blend'),
    ({'tta': 'rot90'}, 'tta'),
  ],
)
def test_bad_settings_fail_clearly(kwargs, message):
  from sharp_unet_jax.errors import UserError  # noqa: PLC0415

  settings = {'num_classes': 1, 'depth': 2, 'tile_size': TILE, 'overlap': 8, **kwargs}
  with pytest.raises(UserError, match=message):
    inference.TiledPredictor(lambda p, x: x, None, **settings)
