"""Builders pairing image and mask files: lung_ct and cvc_clinicdb, and the
handling of missing and bad data that every builder shares."""

import logging

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds
import tifffile

from sharp_unet_jax.data import data_source
import sharp_unet_jax.data.datasets  # noqa: F401  (registers the builders)
from sharp_unet_jax.data.datasets import splits
from sharp_unet_jax.errors import BadDataError, DataNotFoundError

SIZE = 32


def build(name, manual_dir, data_dir, **kwargs):
  """Builds `name` from `manual_dir` into `data_dir`; returns the builder."""
  builder = tfds.builder(name, data_dir=str(data_dir), **kwargs)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  return builder


def load_all(builder):
  """Returns {split: [examples as numpy]} for every split."""
  return {
    split: list(data_source.examples(builder, split)) for split in builder.info.splits
  }


def split_ids(builder):
  """Returns {split: sorted ids}."""
  return {
    split: sorted(ex['id'].decode() for ex in examples)
    for split, examples in load_all(builder).items()
  }


def write_lung(root, count=10, reverse=False):
  """Writes a fake Kaggle lung set: 2d_images/*.tif, 2d_masks/*.tif (0/255)."""
  rng = np.random.default_rng(0)
  (root / '2d_images').mkdir(parents=True)
  (root / '2d_masks').mkdir()
  arrays = {}
  for i in range(count):
    image = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    mask = (rng.random((SIZE, SIZE)) > 0.5).astype(np.uint8) * 255
    arrays[f'ID_{i:04d}_Z_0142'] = image, mask
  for stem in sorted(arrays, reverse=reverse):
    image, mask = arrays[stem]
    tifffile.imwrite(root / '2d_images' / f'{stem}.tif', image)
    tifffile.imwrite(root / '2d_masks' / f'{stem}.tif', mask)
  return arrays


@pytest.fixture(scope='module')
def lung(tmp_path_factory):
  """The lung_ct builder built from 10 fake slices, and their arrays."""
  root = tmp_path_factory.mktemp('lung')
  arrays = write_lung(root / 'manual' / 'finding-lungs-in-ct-data')
  return build('lung_ct', root / 'manual', root / 'data'), arrays


def test_lung_ct_features_values_and_splits(lung):
  builder, arrays = lung
  examples = load_all(builder)
  sizes = {split: len(v) for split, v in examples.items()}
  assert sizes == {
    'train': 7,
    'validation': 1,
    'test': 2,
    'paper_train': 8,
    'paper_test': 2,
  }
  for split_examples in examples.values():
    for ex in split_examples:
      image, mask = arrays[ex['id'].decode()]
      assert ex['image'].shape == (SIZE, SIZE, 1) and ex['image'].dtype == np.uint8
      assert ex['mask'].shape == (SIZE, SIZE, 1) and ex['mask'].dtype == np.uint8
      np.testing.assert_array_equal(ex['image'][..., 0], image)
      np.testing.assert_array_equal(ex['mask'][..., 0], mask // 255)
  ids = split_ids(builder)
  assert sorted(ids['train'] + ids['validation'] + ids['test']) == sorted(arrays)
  assert sorted(ids['paper_train'] + ids['paper_test']) == sorted(arrays)
  assert builder.info.metadata['num_classes'] == 2
  assert 'kmader' in builder.info.homepage and '@misc' in builder.info.citation
  loaded = tfds.data_source(
    'lung_ct', split='paper_test', data_dir=builder._data_dir_root
  )
  assert sorted(ex['id'].decode() for ex in loaded) == ids['paper_test']


def test_splits_do_not_depend_on_file_creation_order(lung, tmp_path):
  builder, _ = lung
  write_lung(tmp_path / 'manual', reverse=True)
  again = build('lung_ct', tmp_path / 'manual', tmp_path / 'data')
  assert split_ids(again) == split_ids(builder)


def test_cvc_clinicdb_tolerates_folder_names_and_png(tmp_path):
  rng = np.random.default_rng(1)
  root = tmp_path / 'm' / 'CVC-ClinicDB'
  original, truth = root / 'original', root / 'GroundTruth'
  original.mkdir(parents=True)
  truth.mkdir()
  for n in range(1, 7):
    image = rng.integers(0, 256, (24, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((24, SIZE), np.uint8)
    mask[4:12, n : n + 10] = 255
    if n % 2:
      tifffile.imwrite(original / f'{n}.tif', image, photometric='rgb')
      tifffile.imwrite(truth / f'{n}.tif', mask)
    else:  # PNG, the mask as grey RGB.
      Image.fromarray(image).save(original / f'{n}.png')
      Image.fromarray(np.stack([mask] * 3, -1)).save(truth / f'{n}.png')
  builder = build('cvc_clinicdb', tmp_path / 'm', tmp_path / 'data')
  examples = load_all(builder)
  assert sum(len(examples[s]) for s in ('train', 'validation', 'test')) == 6
  for ex in examples['train']:
    assert ex['image'].shape == (24, SIZE, 3) and ex['image'].dtype == np.uint8
    n = int(ex['id'])
    assert ex['mask'][..., 0].sum() == 80 and ex['mask'][4, n, 0] == 1


# --- Missing and bad data ------------------------------------------------------


@pytest.mark.parametrize('make_dir', [False, True])
def test_missing_data_names_files_source_and_next_commands(tmp_path, make_dir):
  manual = tmp_path / 'manual'
  if make_dir:
    (manual / '2d_images').mkdir(parents=True)  # No 2d_masks.
  with pytest.raises(DataNotFoundError) as error:
    build('lung_ct', manual, tmp_path / 'data')
  message = str(error.value)
  assert '2d_images/*.tif and 2d_masks/*.tif' in message
  assert 'kaggle.com/datasets/kmader/finding-lungs-in-ct-data' in message
  assert f'sharp_unet_jax.data.datasets.build --manual_dir={manual}' in message
  assert 'tfds build --imports sharp_unet_jax.data.datasets' in message
  assert 'python main.py --config=configs/lung_ct.py' in message
  assert '\n' not in message


def _zero_byte(images, masks, stem='ID_0001_Z_0142'):
  (images / f'{stem}.tif').write_bytes(b'')


def _corrupt(images, masks, stem='ID_0002_Z_0142'):
  (images / f'{stem}.tif').write_bytes(b'II*\x00junk')


def _size_mismatch(images, masks, stem='ID_0003_Z_0142'):
  tifffile.imwrite(masks / f'{stem}.tif', np.zeros((SIZE, SIZE + 1), np.uint8))


def _bad_mask_values(images, masks, stem='ID_0004_Z_0142'):
  values = np.resize(np.uint8([0, 128, 255]), (SIZE, SIZE))
  tifffile.imwrite(masks / f'{stem}.tif', values)


def _unpaired(images, masks):
  (masks / 'ID_0000_Z_0142.tif').unlink()
  (images / 'ID_0005_Z_0142.tif').unlink()


@pytest.mark.parametrize(
  'damage,pattern',
  [
    (_zero_byte, r'ID_0001_Z_0142.tif is empty \(0 bytes\)'),
    (_corrupt, r'cannot decode .*2d_images/ID_0002_Z_0142.tif'),
    (_size_mismatch, r'2d_masks/ID_0003_Z_0142.tif is 32x33 pixels but its image'),
    (_bad_mask_values, r'ID_0004_Z_0142.tif has mask values 0, 128, 255'),
  ],
  ids=['zero_byte', 'corrupt', 'size_mismatch', 'bad_mask_values'],
)
def test_bad_files_raise_bad_data_naming_the_file(tmp_path, damage, pattern):
  manual = tmp_path / 'manual'
  write_lung(manual, count=6)
  damage(manual / '2d_images', manual / '2d_masks')
  with pytest.raises(BadDataError, match=pattern) as error:
    build('lung_ct', manual, tmp_path / 'data')
  assert 'skip_bad_files=True' in str(error.value)


def test_unpaired_images_and_masks_are_named(tmp_path):
  manual = tmp_path / 'manual'
  write_lung(manual, count=6)
  _unpaired(manual / '2d_images', manual / '2d_masks')
  with pytest.raises(BadDataError) as error:
    build('lung_ct', manual, tmp_path / 'data')
  message = str(error.value)
  assert '1 image(s) without a mask' in message and 'ID_0000_Z_0142.tif' in message
  assert '1 mask(s) without an image' in message and 'ID_0005_Z_0142.tif' in message


def test_skip_bad_files_leaves_them_out_and_reports_them(tmp_path, caplog):
  manual = tmp_path / 'manual'
  stems = sorted(write_lung(manual, count=10))
  images, masks = manual / '2d_images', manual / '2d_masks'
  _unpaired(images, masks)
  paired = [s for s in stems if s not in ('ID_0000_Z_0142', 'ID_0005_Z_0142')]
  # Damage examples in train and paper_train, so no split is left empty.
  in_both = sorted(
    set(splits.standard_split(paired)['train'])
    & set(splits.paper_split(paired)['paper_train'])
  )
  bad = in_both[:4]
  for damage, stem in zip(
    (_zero_byte, _corrupt, _size_mismatch, _bad_mask_values), bad
  ):
    damage(images, masks, stem)
  with caplog.at_level(logging.WARNING):
    builder = build('lung_ct', manual, tmp_path / 'data', skip_bad_files=True)
  ids = split_ids(builder)
  kept = sorted(set(paired) - set(bad))
  assert sorted(ids['train'] + ids['validation'] + ids['test']) == kept
  assert sorted(ids['paper_train'] + ids['paper_test']) == kept
  log = caplog.text
  assert 'leaving out 2 unpaired file(s)' in log
  assert 'ID_0000_Z_0142.tif' in log and 'ID_0005_Z_0142.tif' in log
  assert 'split train: skip_bad_files=True: left out 4 bad example(s)' in log
  assert all(stem in log for stem in bad)
