"""The U-Net border weight map, against small hand-computed cases."""

import math

import numpy as np
import optax
import pytest

from configs import default
from sharp_unet_jax.data import input_pipeline, weight_map
from sharp_unet_jax.training import losses


def two_dots():
  """5 x 5 mask with one-pixel objects in opposite corners."""
  mask = np.zeros((5, 5), np.uint8)
  mask[0, 0] = mask[4, 4] = 1
  return mask


def test_border_term_matches_hand_computation():
  weights = weight_map.weight_map(two_dots(), np.ones(2, np.float32))
  # (0, 4): d1 = 4 (to (0, 0)), d2 = 4 (to (4, 4)); w = 1 + 10 exp(-8^2 / 50).
  assert weights[0, 4] == pytest.approx(1 + 10 * math.exp(-64 / 50), rel=1e-6)
  # (2, 2): d1 = d2 = sqrt(8); (d1 + d2)^2 = 32.
  assert weights[2, 2] == pytest.approx(1 + 10 * math.exp(-32 / 50), rel=1e-6)
  # (0, 1): d1 = 1, d2 = sqrt(16 + 9) = 5.
  assert weights[0, 1] == pytest.approx(1 + 10 * math.exp(-36 / 50), rel=1e-6)
  # Object pixels get w_c only.
  assert weights[0, 0] == weights[4, 4] == 1.0


def test_class_weights_balance_frequencies():
  config = default.get_config()
  data = input_pipeline.SplitData(
    np.zeros((1, 5, 5, 3), np.uint8), two_dots()[None], np.array([])
  )
  balance = weight_map.split_class_weights(data, config)
  np.testing.assert_allclose(balance, [25 / (2 * 23), 25 / (2 * 2)])
  weights = weight_map.weight_map(two_dots(), balance, w0=0.0)
  assert weights.mean() == pytest.approx(1.0)
  # A class that never occurs gets weight 0.
  config.num_classes = 3
  assert weight_map.split_class_weights(data, config)[2] == 0.0


def test_instances_separate_touching_objects():
  mask = np.zeros((6, 8), np.uint8)
  mask[2:4, 1:4] = mask[2:4, 4:7] = 1  # two touching boxes: one component
  instances = np.zeros((6, 8), np.int32)
  instances[2:4, 1:4], instances[2:4, 4:7] = 1, 2
  ones = np.ones(2, np.float32)
  merged = weight_map.weight_map(mask, ones)
  separate = weight_map.weight_map(mask, ones, instances)
  np.testing.assert_array_equal(merged, 1.0)  # one object: no border term
  # Just above the seam, (1, 3) and (1, 4) are 1 and sqrt(2) from the boxes.
  assert separate[1, 3] == pytest.approx(1 + 10 * math.exp(-((1 + 2**0.5) ** 2) / 50))
  assert separate[1, 3] > separate[0, 0] > 1.0


def test_connected_components_per_class():
  mask = np.zeros((4, 9), np.uint8)
  mask[:, 0], mask[:, 4], mask[:, 8] = 1, 2, 1
  labels = weight_map.object_labels(mask)
  assert len(np.unique(labels)) == 4  # background + 3 objects
  assert len(np.unique(labels[:, 4])) == 1 and labels[0, 4] != 0


def test_split_class_weights_read_in_batches_equal_the_whole_split():
  config = default.get_config()
  rng = np.random.default_rng(0)
  masks = (rng.random((7, 6, 5)) < 0.3).astype(np.uint8)
  data = input_pipeline.SplitData(np.zeros((7, 6, 5, 3), np.uint8), masks, np.array([]))
  got = weight_map.split_class_weights(data, config, batch_size=3)
  # total / (present classes * count), the whole split at once.
  counts = np.bincount(masks.reshape(-1), minlength=2)
  np.testing.assert_allclose(got, counts.sum() / (2 * counts), rtol=1e-6)
  assert got[1] > got[0] > 0
  config.weight_map_balance = False
  np.testing.assert_array_equal(weight_map.split_class_weights(data, config), 1.0)


def test_weights_reach_the_batches_and_the_loss():
  config = default.get_config()
  config.update(batch_size=2, weight_map_balance=False)
  masks = np.stack([two_dots(), np.zeros((5, 5), np.uint8)])
  images = np.zeros((2, 5, 5, 3), np.uint8)
  data = input_pipeline.SplitData(images, masks, np.array([b'a', b'b']))
  data = weight_map.split_weight_maps(data, config)
  assert data.weights.shape == (2, 5, 5)
  np.testing.assert_array_equal(data.weights[1], 1.0)
  batch = input_pipeline.train_batch(data, config, step=0)
  assert batch['weights'].shape == (2, 5, 5)
  # The weighted loss is the weighted mean of the per-pixel losses.
  logits = np.linspace(-2, 2, 50, dtype=np.float32).reshape(2, 5, 5, 1)
  per_pixel = optax.sigmoid_binary_cross_entropy(
    logits[..., 0], batch['mask'].astype(np.float32)
  )
  expected = float(np.sum(per_pixel * batch['weights']) / np.sum(batch['weights']))
  got = losses.cross_entropy(logits, batch['mask'], batch['weights'])
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_dsb2018_instances_are_read_and_used(tmp_path):
  from datasets_dsb_test import SHAPE, write_dsb  # noqa: PLC0415
  from datasets_pairs_test import build  # noqa: PLC0415

  write_dsb(tmp_path / 'manual')
  build('dsb2018', tmp_path / 'manual', tmp_path / 'data')
  config = default.get_config()
  config.update(
    dataset='dsb2018',
    data_dir=str(tmp_path / 'data'),
    manual_dir=str(tmp_path / 'manual'),
    image_size=SHAPE,
    weight_map=True,
  )
  data = input_pipeline.load_split(config, 'paper_train', instances=True)
  every = np.arange(len(data))
  examples = data.read(every)
  assert examples['instances'].shape == examples['mask'].shape
  np.testing.assert_array_equal(examples['instances'] > 0, examples['mask'] > 0)
  assert examples['instances'].max() >= 2  # several nuclei, numbered
  data = weight_map.split_weight_maps(data, config)
  examples = data.read(every)
  several = [i for i in every if examples['instances'][i].max() >= 2][0]
  # Background between two nuclei gets the border term.
  background = examples['mask'][several] == 0
  assert examples['weights'][several][background].max() > 5.0
  assert 'instances' not in input_pipeline.load_split(config, 'paper_train').read([0])
