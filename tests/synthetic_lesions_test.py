"""Tests of the embedded `synthetic_lesions` TFDS builder (its `small` config)."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from sharp_unet_jax import baselines  # noqa: E402
from sharp_unet_jax.data import data_source  # noqa: E402
import sharp_unet_jax.data.datasets  # noqa: E402, F401
from sharp_unet_jax.data.datasets import synthetic_lesions  # noqa: E402

SPLITS = {'train': 64, 'validation': 16, 'test': 16}
SIZE = 128


def _load(data_dir) -> dict[str, dict[str, np.ndarray]]:
  builder = tfds.builder('synthetic_lesions/small', data_dir=os.fspath(data_dir))
  builder.download_and_prepare()
  return {split: data_source.stacked(builder, split) for split in SPLITS}


@pytest.fixture(scope='module')
def data(tfds_dir):
  # tfds_dir (conftest.py): the session's build of synthetic_lesions/small.
  return _load(tfds_dir)


def test_registered():
  assert 'synthetic_lesions' in tfds.list_builders()
  builder = tfds.builder('synthetic_lesions', data_dir='/nonexistent')
  assert builder.builder_config.name == 'default'
  config = builder.builder_config
  assert (config.num_train, config.num_validation, config.num_test) == (
    2000,
    200,
    200,
  )


def test_split_sizes(data):
  assert {split: len(d['image']) for split, d in data.items()} == SPLITS
  for d in data.values():
    assert len(d['mask']) == len(d['id']) == len(d['image'])


def test_shapes_and_dtypes(data):
  for split, d in data.items():
    n = SPLITS[split]
    assert d['image'].shape == (n, SIZE, SIZE, 3)
    assert d['image'].dtype == np.uint8
    assert d['mask'].shape == (n, SIZE, SIZE, 1)
    assert d['mask'].dtype == np.uint8


def test_mask_values_are_0_and_1(data):
  for d in data.values():
    assert set(np.unique(d['mask'])) == {0, 1}


def test_ids_are_unique_and_name_the_example(data):
  for split, d in data.items():
    ids = sorted(i.decode() for i in d['id'])
    assert ids == [f'{split}_{i:05d}' for i in range(SPLITS[split])]


def test_examples_match_the_generator(data):
  # The stored PNGs are lossless: every example is exactly what the seeded
  # generator draws for its (split, index).
  d = data['validation']
  for k in (0, 7):
    split, index = d['id'][k].decode().split('_')
    image, mask = synthetic_lesions.generate_example(
      synthetic_lesions.example_rng(split, int(index)), SIZE
    )
    np.testing.assert_array_equal(d['image'][k], image)
    np.testing.assert_array_equal(d['mask'][k], mask)


def test_generator_is_seeded_per_example():
  a = synthetic_lesions.generate_example(synthetic_lesions.example_rng('test', 3))
  b = synthetic_lesions.generate_example(synthetic_lesions.example_rng('test', 3))
  c = synthetic_lesions.generate_example(synthetic_lesions.example_rng('test', 4))
  d = synthetic_lesions.generate_example(synthetic_lesions.example_rng('train', 3))
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], c[0])
  assert not np.array_equal(a[0], d[0])


def test_two_builds_are_identical(data, tmp_path):
  again = _load(tmp_path)
  for split in SPLITS:
    order = np.argsort(data[split]['id'])
    order_again = np.argsort(again[split]['id'])
    for key in ('id', 'image', 'mask'):
      np.testing.assert_array_equal(
        data[split][key][order], again[split][key][order_again]
      )


def test_most_images_show_one_lesion_of_varying_size(data):
  masks = np.concatenate([d['mask'] for d in data.values()])
  area = masks.mean(axis=(1, 2, 3))
  assert np.mean(area > 0.02) >= 0.9
  assert area.max() < 0.6
  assert np.percentile(area, 90) > 2.5 * np.percentile(area, 10)


def test_lesions_are_darker_than_the_skin_around_them(data):
  d = data['train']
  grey = d['image'].astype(np.float32).mean(axis=-1)
  mask = d['mask'][..., 0] > 0
  darker = []
  for g, m in zip(grey, mask):
    if m.sum() < 50:
      continue
    # Skin: the band 4-12 pixels outside the lesion.
    rows, cols = np.nonzero(m)
    ring = np.zeros_like(m)
    top, bottom = max(rows.min() - 12, 0), rows.max() + 13
    left, right = max(cols.min() - 12, 0), cols.max() + 13
    ring[top:bottom, left:right] = True
    ring &= ~m
    darker.append(np.median(g[m]) < np.median(g[ring]))
  assert len(darker) >= 50
  assert np.mean(darker) >= 0.9


def test_images_vary_in_skin_tone(data):
  grey = data['train']['image'].astype(np.float32).mean(axis=-1)
  skin = (data['train']['mask'][..., 0] == 0) & (grey > 60)  # Not the border.
  tone = np.array([np.median(g[s]) for g, s in zip(grey, skin)])
  assert tone.std() > 8.0


def best_global_threshold_dice(image, mask) -> float:
  """Dice of the best single grey threshold, chosen with the truth.

  Every grey level of the image, keeping the darker or the lighter side: an
  upper bound on what any global-threshold method gets on this image.
  """
  g, truth = baselines.grey(image).ravel(), mask[..., 0].ravel() > 0
  levels, index = np.unique(g, return_inverse=True)
  pixels = np.bincount(index, minlength=len(levels))
  hits = np.bincount(index, weights=truth, minlength=len(levels))
  # Pixels and true pixels at or below each level, then at or above it.
  below, hits_below = np.cumsum(pixels), np.cumsum(hits)
  above, hits_above = g.size - below + pixels, truth.sum() - hits_below + hits
  dice = 2 * np.concatenate([hits_below, hits_above])
  dice /= np.concatenate([below, above]) + truth.sum()
  return float(dice.max())


def test_global_threshold_does_not_solve_it(data):
  images, masks = data['test']['image'], data['test']['mask']
  oracle = np.mean([best_global_threshold_dice(i, m) for i, m in zip(images, masks)])
  # Even a threshold picked per image with the truth stays far from 1 ...
  assert oracle < 0.85
  otsu = baselines.otsu_dice(images, masks)
  # ... Otsu is one such threshold, so it cannot beat that bound, and the
  # lesions are darker overall, so it finds a good part of them.
  assert 0.5 < otsu <= oracle + 1e-12
