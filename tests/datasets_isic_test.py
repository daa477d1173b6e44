"""The isic2018 builder: official zip files or folders, official splits."""

import io
import zipfile

from datasets_pairs_test import build, load_all, split_ids
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from sharp_unet_jax.data import data_source
from sharp_unet_jax.data.datasets import isic2018
from sharp_unet_jax.errors import BadDataError, DataNotFoundError

TRAIN_IDS = [f'ISIC_{i:07d}' for i in range(8)]
VALIDATION_IDS = ['ISIC_0012000', 'ISIC_0012001']


def _jpeg(i: int) -> bytes:
  buffer = io.BytesIO()
  image = np.full((12, 16, 3), 20 * i, np.uint8)
  Image.fromarray(image).save(buffer, format='JPEG')
  return buffer.getvalue()


def _png_mask(i: int) -> bytes:
  mask = np.zeros((12, 16), np.uint8)
  mask[2:8, 1 : 2 + i] = 255
  buffer = io.BytesIO()
  Image.fromarray(mask).save(buffer, format='PNG')
  return buffer.getvalue()


def write_zip(path, folder, files):
  """Writes an official-style zip: every file under the top folder `folder`."""
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr(f'{folder}/LICENSE.txt', 'CC-BY-NC')
    for name, data in files.items():
      archive.writestr(f'{folder}/{name}', data)


def write_isic(manual, orphan_mask=False):
  """Training set as zip files, validation as extracted folders, no test."""
  manual.mkdir(parents=True, exist_ok=True)
  train_input, train_truth = isic2018.PARTS['train']
  images = {f'{i}.jpg': _jpeg(n) for n, i in enumerate(TRAIN_IDS)}
  masks = {f'{i}_segmentation.png': _png_mask(n) for n, i in enumerate(TRAIN_IDS)}
  if orphan_mask:
    masks['ISIC_0099999_segmentation.png'] = _png_mask(0)
  write_zip(manual / f'{train_input}.zip', train_input, images)
  write_zip(manual / f'{train_truth}.zip', train_truth, masks)
  validation_input, validation_truth = isic2018.PARTS['validation']
  (manual / validation_input).mkdir()
  (manual / validation_truth).mkdir()
  for n, i in enumerate(VALIDATION_IDS):
    (manual / validation_input / f'{i}.jpg').write_bytes(_jpeg(n))
    (manual / validation_truth / f'{i}_segmentation.png').write_bytes(_png_mask(n))


@pytest.fixture(scope='module')
def isic(tmp_path_factory):
  root = tmp_path_factory.mktemp('isic')
  write_isic(root / 'manual')
  return build('isic2018', root / 'manual', root / 'data')


def test_official_validation_is_used_and_test_is_carved_from_training(isic):
  ids = split_ids(isic)
  assert ids['validation'] == VALIDATION_IDS
  assert sorted(ids['train'] + ids['test']) == TRAIN_IDS
  assert len(ids['test']) == 2 and set(ids['train']).isdisjoint(ids['test'])
  assert sorted(ids['paper_train'] + ids['paper_test']) == TRAIN_IDS
  assert len(ids['paper_test']) == 2


def test_images_keep_jpeg_bytes_and_masks_are_binary(isic):
  for ex in load_all(isic)['train']:
    assert ex['image'].shape == (12, 16, 3) and ex['image'].dtype == np.uint8
    n = TRAIN_IDS.index(ex['id'].decode())
    assert abs(int(ex['image'].mean()) - 20 * n) <= 2
    assert set(np.unique(ex['mask'])) <= {0, 1}
    assert ex['mask'][..., 0].sum() == 6 * (1 + n)
  raw = data_source.examples(
    isic, 'validation', decoders={'image': tfds.decode.SkipDecoding()}
  )
  stored = {ex['id'].decode(): ex['image'] for ex in raw}
  assert stored['ISIC_0012001'] == _jpeg(1)
  assert 'CC-BY-NC' in isic.info.description and '@article' in isic.info.citation


def test_missing_training_data_names_the_zip_files(tmp_path):
  (tmp_path / 'manual' / 'unrelated').mkdir(parents=True)
  with pytest.raises(DataNotFoundError) as error:
    build('isic2018', tmp_path / 'manual', tmp_path / 'data')
  message = str(error.value)
  assert 'ISIC2018_Task1-2_Training_Input' in message
  assert 'ISIC2018_Task1_Training_GroundTruth' in message
  assert 'challenge.isic-archive.com' in message and 'isic2018/download=True' in message
  assert 'configs/isic.py' in message


def test_mask_without_image_in_zip_is_named(tmp_path):
  write_isic(tmp_path / 'manual', orphan_mask=True)
  with pytest.raises(BadDataError, match=r'1 mask\(s\) without an image.*GroundTruth'):
    build('isic2018', tmp_path / 'manual', tmp_path / 'data')


def test_download_option_fetches_missing_zips(tmp_path, monkeypatch):
  """With download=True and no manual data, the official URLs are fetched."""
  source = tmp_path / 'source'
  write_isic(source)
  requested = {}

  def fake_download(self, urls):
    del self
    requested.update(urls)
    return {part: source / f'{part}.zip' for part in urls if 'Training' in part}

  monkeypatch.setattr(tfds.download.DownloadManager, 'download', fake_download)
  builder = build('isic2018', tmp_path / 'empty', tmp_path / 'data', download=True)
  assert requested['ISIC2018_Task1-2_Training_Input'] == (
    'https://isic-challenge-data.s3.amazonaws.com/2018/'
    'ISIC2018_Task1-2_Training_Input.zip'
  )
  assert len(requested) == 6
  ids = split_ids(builder)
  assert sorted(ids['train'] + ids['validation'] + ids['test']) == TRAIN_IDS
