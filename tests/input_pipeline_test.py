"""Tests of the input pipeline: data order, padding, loading, conversions."""

import numpy as np
import pytest

from sharp_unet_jax import input_pipeline
from sharp_unet_jax.errors import UserError


def test_train_order_is_a_function_of_seed_and_step():
  a = [input_pipeline.train_indices(0, s, 8, 30) for s in range(10)]
  b = [input_pipeline.train_indices(0, s, 8, 30) for s in reversed(range(10))][::-1]
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  other_seed = input_pipeline.train_indices(1, 0, 8, 30)
  assert not np.array_equal(a[0], other_seed)


def test_each_epoch_visits_every_example_once():
  n, batch = 30, 6  # 5 steps per epoch
  first_epoch = np.concatenate(
    [input_pipeline.train_indices(3, s, batch, n) for s in range(5)]
  )
  second_epoch = np.concatenate(
    [input_pipeline.train_indices(3, s, batch, n) for s in range(5, 10)]
  )
  assert sorted(first_epoch) == list(range(n))
  assert sorted(second_epoch) == list(range(n))
  assert not np.array_equal(first_epoch, second_epoch)


def make_split(n):
  images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) * np.ones(
    (1, 4, 4, 3), np.uint8
  )
  return input_pipeline.SplitData(
    images, np.zeros((n, 4, 4), np.uint8), np.array([b''] * n)
  )


def test_eval_batches_pad_and_count_every_example_once():
  batches = list(input_pipeline.eval_batches(make_split(10), 4))
  assert len(batches) == 3
  valid = np.concatenate([b['valid'] for b in batches])
  assert valid.sum() == 10 and valid.shape == (12,)
  seen = np.concatenate([b['image'][:, 0, 0, 0] for b in batches])[valid > 0]
  np.testing.assert_allclose(seen * 255, np.arange(10), atol=1e-4)


def test_normalize_uses_the_dtype_range():
  assert input_pipeline.normalize(np.array([255], np.uint8))[0] == 1.0
  assert input_pipeline.normalize(np.array([65535], np.uint16))[0] == 1.0


def test_channel_conversions():
  grey = np.full((1, 2, 2, 1), 7, np.uint8)
  assert input_pipeline.to_channels(grey, 3).shape == (1, 2, 2, 3)
  rgba = np.full((1, 2, 2, 4), 9, np.uint8)
  assert input_pipeline.to_channels(rgba, 3).shape == (1, 2, 2, 3)
  rgb = np.full((1, 2, 2, 3), 100, np.uint8)
  assert input_pipeline.to_channels(rgb, 1)[0, 0, 0, 0] == 100


def test_check_batch_size_message():
  import jax  # noqa: PLC0415

  with pytest.raises(
    UserError, match=f'multiple of the number of devices \\({jax.device_count()}\\)'
  ):
    input_pipeline.check_batch_size(jax.device_count() + 1)
  # A mesh of another size: 6 splits over 2 devices, not over 4.
  input_pipeline.check_batch_size(6, 'eval_batch_size', num_devices=2)
  with pytest.raises(UserError, match=r'config.eval_batch_size=6 .* devices \(4\)'):
    input_pipeline.check_batch_size(6, 'eval_batch_size', num_devices=4)


def test_load_split_resizes_and_checks_masks(tiny_config):
  data = input_pipeline.load_split(tiny_config, 'validation')
  assert data.images.shape == (16, 32, 32, 3) and data.images.dtype == np.uint8
  assert set(np.unique(data.masks)) <= {0, 1}
  with pytest.raises(UserError, match='does not exist'):
    input_pipeline.load_split(tiny_config, 'nonexistent')


def test_mask_values_outside_classes_are_reported(tiny_config):
  with pytest.raises(UserError, match=r'mask values \[0, 1, 7\]'):
    input_pipeline.check_mask_values(np.array([0, 1, 7]), tiny_config, 'x.png')
