"""Builders reading whole volumes: isbi2012 (multi-page TIFF), covid19_ct (NIfTI)."""

from datasets_pairs_test import build, load_all, split_ids
import nibabel as nib
import numpy as np
import pytest
import tifffile

from sharp_unet_jax.data.datasets import covid19_ct
from sharp_unet_jax.errors import BadDataError, DataNotFoundError

PAGES, SIDE = 10, 16


def write_isbi(manual, labels=None):
  """Writes train-volume.tif and train-labels.tif (0/255) of PAGES pages."""
  manual.mkdir(parents=True)
  volume = (
    np.arange(PAGES * SIDE * SIDE, dtype=np.uint32).reshape(PAGES, SIDE, SIDE) % 251
  )
  if labels is None:
    labels = np.zeros((PAGES, SIDE, SIDE), np.uint8)
    for page in range(PAGES):
      labels[page, : page + 1] = 255
  tifffile.imwrite(manual / 'train-volume.tif', volume.astype(np.uint8))
  tifffile.imwrite(manual / 'train-labels.tif', labels)
  return volume.astype(np.uint8)


def test_isbi2012_pages_split_by_index(tmp_path):
  volume = write_isbi(tmp_path / 'manual' / 'isbi')
  builder = build('isbi2012', tmp_path / 'manual', tmp_path / 'data')
  ids = split_ids(builder)
  assert ids['train'] == [f'page_{i:02d}' for i in range(7)]
  assert ids['validation'] == ['page_07'] and ids['test'] == ['page_08', 'page_09']
  assert len(ids['paper_test']) == 2 and len(ids['paper_train']) == 8
  for ex in load_all(builder)['train']:
    page = int(ex['id'].decode()[-2:])
    assert ex['image'].shape == (SIDE, SIDE, 1) and ex['image'].dtype == np.uint8
    np.testing.assert_array_equal(ex['image'][..., 0], volume[page])
    assert ex['mask'][..., 0].sum() == (page + 1) * SIDE  # Interior = 255 -> 1.


def test_isbi2012_page_count_mismatch_and_missing_file(tmp_path):
  write_isbi(tmp_path / 'manual', labels=np.zeros((PAGES - 1, SIDE, SIDE), np.uint8))
  with pytest.raises(BadDataError, match='train-volume.tif has 10 pages but .*has 9'):
    build('isbi2012', tmp_path / 'manual', tmp_path / 'data')
  (tmp_path / 'manual' / 'train-labels.tif').unlink()
  with pytest.raises(DataNotFoundError, match='no file train-labels.tif found'):
    build('isbi2012', tmp_path / 'manual', tmp_path / 'data')


SLICES = 6


def write_covid(manual, mask_values=(0, 1, 2, 3)):
  """Writes tr_im.nii.gz (HU) and tr_mask.nii.gz (classes), X x Y x SLICES."""
  manual.mkdir(parents=True)
  hu = np.linspace(-1000, 1000, SIDE * 12 * SLICES).reshape(SIDE, 12, SLICES)
  mask = np.zeros((SIDE, 12, SLICES), np.float32)
  for i in range(SLICES):
    mask[:4, :3, i] = mask_values[i % len(mask_values)]
  nib.save(nib.Nifti1Image(hu.astype(np.float32), np.eye(4)), manual / 'tr_im.nii.gz')
  nib.save(nib.Nifti1Image(mask, np.eye(4)), manual / 'tr_mask.nii.gz')
  return hu, mask


def test_covid19_ct_window_rotation_and_classes(tmp_path):
  hu, mask = write_covid(tmp_path / 'manual')
  builder = build('covid19_ct', tmp_path / 'manual', tmp_path / 'data')
  examples = load_all(builder)
  assert sum(len(examples[s]) for s in ('train', 'validation', 'test')) == SLICES
  assert builder.info.metadata['num_classes'] == 4
  for ex in examples['paper_train'] + examples['paper_test']:
    i = int(ex['id'].decode()[-3:])
    # 90 degrees clockwise: X x Y becomes Y x X, first row = first column reversed.
    assert ex['image'].shape == (12, SIDE, 1) and ex['image'].dtype == np.uint16
    expected = np.clip((np.rot90(hu[:, :, i], -1) + 512) / 1024, 0, 1)
    np.testing.assert_allclose(ex['image'][..., 0] / 65535, expected, atol=1e-5)
    assert ex['mask'][0, -1, 0] == mask[0, 0, i] and ex['mask'].shape == (12, SIDE, 1)
  assert covid19_ct.hu_to_uint16(np.array([-2000, -512, 0, 512, 3000])).tolist() == [
    0,
    0,
    32768,
    65535,
    65535,
  ]


def test_covid19_ct_class_index_out_of_range_is_named(tmp_path):
  write_covid(tmp_path / 'manual', mask_values=(0, 4))
  with pytest.raises(BadDataError, match=r'tr_mask.nii.gz slice 1 has mask values 4 '):
    build('covid19_ct', tmp_path / 'manual', tmp_path / 'data')


def test_covid19_ct_unreadable_volume_is_named(tmp_path):
  write_covid(tmp_path / 'manual')
  (tmp_path / 'manual' / 'tr_im.nii.gz').write_bytes(b'\x1f\x8b broken gzip')
  with pytest.raises(
    BadDataError, match='cannot read .*tr_im.nii.gz as a NIfTI volume'
  ):
    build('covid19_ct', tmp_path / 'manual', tmp_path / 'data')
