"""Tests of the Otsu threshold baseline."""

import os
import subprocess
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sharp_unet_jax import baselines  # noqa: E402


def _dark_square(size=32, dark=40, light=200, channels=3):
  """Returns an image with a dark square on a light background, and its mask."""
  mask = np.zeros((size, size), np.uint8)
  mask[8:20, 10:26] = 1
  grey = np.where(mask > 0, dark, light).astype(np.uint8)
  image = np.repeat(grey[..., None], channels, axis=-1)
  return image, mask


def test_dice():
  a = np.zeros((4, 4), bool)
  a[:2] = True
  b = np.zeros((4, 4), bool)
  b[1:3] = True
  assert baselines.dice(a, a) == 1.0
  assert baselines.dice(a, ~a) == 0.0
  assert baselines.dice(a, b) == pytest.approx(0.5)
  assert baselines.dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
  assert baselines.dice(a, np.zeros((4, 4))) == 0.0


def test_dark_object_is_found():
  image, mask = _dark_square()
  np.testing.assert_array_equal(baselines.otsu_segment(image), mask > 0)
  assert baselines.otsu_dice([image], [mask[..., None]]) == 1.0


def test_foreground_is_the_dark_side():
  image, mask = _dark_square(dark=220, light=30)
  assert baselines.otsu_dice([image], [mask]) == 0.0


def test_accepts_grey_float_and_batched_inputs():
  image, mask = _dark_square(channels=1)
  images = [image, image / 255.0, image[..., 0].astype(np.float32)]
  assert baselines.otsu_dice(images, [mask] * 3) == 1.0
  assert baselines.otsu_dice(np.stack([image] * 2), np.stack([mask] * 2)) == 1.0


def test_mean_is_per_image():
  image, mask = _dark_square()
  flipped = 255 - image
  assert baselines.otsu_dice([image, flipped], [mask, mask]) == pytest.approx(0.5)


def test_constant_image_predicts_background():
  image = np.full((16, 16, 3), 128, np.uint8)
  assert not baselines.otsu_segment(image).any()
  assert baselines.otsu_dice([image], [np.zeros((16, 16), np.uint8)]) == 1.0


def test_rejects_bad_input():
  image, mask = _dark_square()
  with pytest.raises(ValueError, match='masks'):
    baselines.otsu_dice([image, image], [mask])
  with pytest.raises(ValueError, match='No images'):
    baselines.otsu_dice([], [])
  with pytest.raises(ValueError, match='size'):
    baselines.otsu_dice([image], [mask[:16]])
  with pytest.raises(ValueError, match='image'):
    baselines.otsu_segment(np.zeros((4, 4, 2)))


def test_main_prints_otsu_dice(tfds_dir):
  # tfds_dir (conftest.py) holds a built synthetic_lesions/small.
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'sharp_unet_jax.baselines',
      f'--data_dir={tfds_dir}',
      '--dataset=synthetic_lesions/small',
      '--split=validation',
    ],
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    capture_output=True,
    text=True,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  last = result.stdout.strip().splitlines()[-1]
  assert last.startswith('otsu_dice=')
  # The same score computed here on the split the flags name.
  import tensorflow_datasets as tfds  # noqa: PLC0415

  from sharp_unet_jax.data import data_source  # noqa: PLC0415

  builder = tfds.builder('synthetic_lesions/small', data_dir=tfds_dir)
  validation = data_source.stacked(builder, 'validation')
  expected = baselines.otsu_dice(validation['image'], validation['mask'])
  printed = last.split('=')[1]
  assert float(printed) == pytest.approx(
    expected, abs=10.0 ** -len(printed.split('.')[1])
  )
