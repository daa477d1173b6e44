"""Tests of the input pipeline: data order, padding, loading, conversions."""

import numpy as np
import pytest

from sharp_unet_jax.data import channels, data_source, input_pipeline
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
  assert channels.to_channels(grey, 3).shape == (1, 2, 2, 3)
  rgba = np.full((1, 2, 2, 4), 9, np.uint8)
  assert channels.to_channels(rgba, 3).shape == (1, 2, 2, 3)
  rgb = np.full((1, 2, 2, 3), 100, np.uint8)
  assert channels.to_channels(rgb, 1)[0, 0, 0, 0] == 100


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


def test_load_split_reads_resized_examples_by_index(tiny_config):
  data = input_pipeline.load_split(tiny_config, 'validation')
  assert len(data) == 16
  examples = data.read([5, 0, 5])
  assert examples['image'].shape == (3, 32, 32, 3)
  assert examples['image'].dtype == np.uint8
  assert set(np.unique(examples['mask'])) <= {0, 1}
  assert examples['id'][0] == examples['id'][2] != examples['id'][1]
  with pytest.raises(UserError, match='does not exist'):
    input_pipeline.load_split(tiny_config, 'nonexistent')


def test_per_example_resizing_equals_resizing_the_stored_split(tiny_config):
  """The values of the former whole-split tf.image.resize, example by example."""
  import tensorflow as tf  # noqa: PLC0415

  tiny_config.image_size = (40, 52)
  data = input_pipeline.load_split(tiny_config, 'test')
  stored = data_source.stacked(input_pipeline.get_builder(tiny_config), 'test')
  images = tf.image.resize(stored['image'], (40, 52), method='bilinear')
  images = tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8).numpy()
  masks = tf.image.resize(stored['mask'], (40, 52), method='nearest').numpy()
  read = data.read(np.arange(len(data)))
  np.testing.assert_array_equal(read['image'], images)
  np.testing.assert_array_equal(read['mask'], masks[..., 0])
  np.testing.assert_array_equal(read['id'], stored['id'])


def test_bad_mask_values_name_the_example(tiny_config, tmp_path):
  """Three classes in the masks, a binary model: the example is named."""
  from PIL import Image  # noqa: PLC0415

  for sub in ('images', 'masks'):
    (tmp_path / sub).mkdir()
  for i in range(6):
    mask = np.zeros((16, 16), np.uint8)
    mask[2:6, 2:6], mask[8:12, 8:12] = 1, 2
    Image.fromarray(mask * 60).convert('RGB').save(tmp_path / 'images' / f'e{i}.png')
    Image.fromarray(mask).save(tmp_path / 'masks' / f'e{i}.png')
  tiny_config.update(
    dataset='segmentation_folder',
    data_dir=str(tmp_path),
    manual_dir=str(tmp_path),
    image_size=(16, 16),
  )
  data = input_pipeline.load_split(tiny_config, 'paper_train')
  with pytest.raises(UserError, match=r"example 'e\d' \(index 0\): mask values"):
    data.read([0])


def test_data_built_in_the_old_format_gets_a_rebuild_message(tiny_config, tmp_path):
  import tensorflow_datasets as tfds  # noqa: PLC0415

  builder = tfds.builder(
    tiny_config.dataset, data_dir=str(tmp_path), file_format='tfrecord'
  )
  builder.download_and_prepare()
  tiny_config.data_dir = str(tmp_path)
  with pytest.raises(UserError, match='older record format.*Delete that folder'):
    input_pipeline.load_split(tiny_config, 'test')


def test_mask_values_outside_classes_are_reported(tiny_config):
  with pytest.raises(UserError, match=r'mask values \[0, 1, 7\]'):
    input_pipeline.check_mask_values(np.array([0, 1, 7]), tiny_config, 'x.png')
