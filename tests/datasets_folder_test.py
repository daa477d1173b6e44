"""The segmentation_folder builder: any images/ + masks/ folder."""

import pathlib

from datasets_pairs_test import build, load_all
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.scripts.cli import build as tfds_build
from tensorflow_datasets.scripts.cli import cli_utils
import tifffile

from sharp_unet_jax.data import data_source
from sharp_unet_jax.data.datasets import build as build_module
from sharp_unet_jax.data.datasets import segmentation_folder
from sharp_unet_jax.errors import BadDataError


def _mask(i: int, top: int = 255) -> np.ndarray:
  mask = np.zeros((20, 24), np.uint8)
  mask[2 : 8 + i, 3:15] = top
  return mask


def write_mixed(root: pathlib.Path) -> dict[str, np.ndarray]:
  """Writes images in five formats with 0/255 PNG masks; returns the images."""
  rng = np.random.default_rng(2)
  (root / 'images').mkdir(parents=True)
  (root / 'masks').mkdir()
  rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
  images = {
    'a_rgb': rgb,
    'b_jpeg': rgb,
    'c_grey16': rng.integers(0, 65536, (20, 24), dtype=np.uint16),
    'd_rgba': np.concatenate([rgb, np.full((20, 24, 1), 9, np.uint8)], -1),
    'e_grey': rgb[..., 0],
  }
  Image.fromarray(images['a_rgb']).save(root / 'images' / 'a_rgb.png')
  Image.fromarray(images['b_jpeg']).save(root / 'images' / 'b_jpeg.jpg', quality=95)
  tifffile.imwrite(root / 'images' / 'c_grey16.tif', images['c_grey16'])
  Image.fromarray(images['d_rgba']).save(root / 'images' / 'd_rgba.png')
  Image.fromarray(images['e_grey']).save(root / 'images' / 'e_grey.png')
  for i, stem in enumerate(sorted(images)):
    Image.fromarray(_mask(i)).save(root / 'masks' / f'{stem}.png')
  return images


@pytest.fixture(scope='module')
def mixed(tmp_path_factory):
  root = tmp_path_factory.mktemp('folder')
  images = write_mixed(root / 'folder')
  return (
    build('segmentation_folder', root / 'folder', root / 'data'),
    images,
    root / 'folder',
  )


def test_rgb8_converts_every_format_and_keeps_masks(mixed):
  builder, images, folder = mixed
  assert builder.info.metadata['num_classes'] == 2
  assert builder.info.metadata['mask_encoding'] == '0/255'
  examples = {
    ex['id'].decode(): ex
    for split in ('train', 'validation', 'test')
    for ex in load_all(builder)[split]
  }
  assert sorted(examples) == sorted(images)
  for i, stem in enumerate(sorted(images)):
    image, mask = examples[stem]['image'], examples[stem]['mask']
    assert image.shape == (20, 24, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(mask[..., 0], _mask(i, 1))
  np.testing.assert_array_equal(examples['a_rgb']['image'], images['a_rgb'])
  np.testing.assert_array_equal(examples['d_rgba']['image'], images['a_rgb'])
  grey = examples['e_grey']['image']
  assert np.all(grey == images['e_grey'][..., None])
  deep = examples['c_grey16']['image'][..., 0]
  np.testing.assert_array_equal(deep, (images['c_grey16'].astype(int) + 128) // 257)
  # The JPEG's own bytes are stored: no re-encoding, no loss.
  raw = data_source.examples(
    builder, 'train+validation+test', decoders={'image': tfds.decode.SkipDecoding()}
  )
  stored = {ex['id'].decode(): ex['image'] for ex in raw}
  assert stored['b_jpeg'] == (folder / 'images' / 'b_jpeg.jpg').read_bytes()
  assert stored['a_rgb'] != (folder / 'images' / 'a_rgb.png').read_bytes()


def test_grey16_config_keeps_16_bits(tmp_path):
  (tmp_path / 'f' / 'images').mkdir(parents=True)
  (tmp_path / 'f' / 'masks').mkdir()
  deep = np.arange(20 * 24, dtype=np.uint16).reshape(20, 24) * 131
  for i in range(4):
    tifffile.imwrite(tmp_path / 'f' / 'images' / f'{i}.tif', deep + i)
    Image.fromarray(_mask(i, 1)).save(tmp_path / 'f' / 'masks' / f'{i}.png')
  builder = build('segmentation_folder/grey16', tmp_path / 'f', tmp_path / 'data')
  assert builder.builder_config.name == 'grey16'
  for ex in load_all(builder)['paper_train']:
    assert ex['image'].dtype == np.uint16 and ex['image'].shape == (20, 24, 1)
    np.testing.assert_array_equal(ex['image'][..., 0], deep + int(ex['id']))
  assert builder.info.metadata['mask_encoding'] == '0/1'


def _write_class_masks(root, masks):
  (root / 'images').mkdir(parents=True)
  (root / 'masks').mkdir()
  for i, mask in enumerate(masks):
    Image.fromarray(np.zeros(mask.shape, np.uint8)).save(root / 'images' / f'{i}.png')
    Image.fromarray(mask).save(root / 'masks' / f'{i}.png')


def test_class_indices_are_inferred_from_all_masks(tmp_path):
  masks = [np.full((8, 8), i % 3, np.uint8) for i in range(5)]
  _write_class_masks(tmp_path / 'f', masks)
  builder = build('segmentation_folder/grey8', tmp_path / 'f', tmp_path / 'data')
  assert builder.info.metadata['num_classes'] == 3
  assert builder.info.metadata['mask_encoding'] == 'class indices'
  for ex in load_all(builder)['paper_train'] + load_all(builder)['paper_test']:
    assert np.all(ex['mask'] == int(ex['id']) % 3)


def test_mixed_mask_encodings_are_an_error_naming_files(tmp_path):
  masks = [np.eye(8, dtype=np.uint8) * 255] * 3 + [np.eye(8, dtype=np.uint8)]
  _write_class_masks(tmp_path / 'f', masks)
  with pytest.raises(BadDataError, match=r'mask values 0, 1, 255 fit no single') as e:
    build('segmentation_folder', tmp_path / 'f', tmp_path / 'data')
  assert 'masks/0.png: 0, 255' in str(e.value) and 'masks/3.png: 0, 1' in str(e.value)


def test_class_index_at_or_above_num_classes_is_named(tmp_path):
  masks = [np.full((8, 8), i, np.uint8) for i in (0, 1, 2, 5)]
  _write_class_masks(tmp_path / 'f', masks)
  with pytest.raises(BadDataError, match=r'masks/3.png has mask values 5 .*0\.\.2'):
    build('segmentation_folder', tmp_path / 'f', tmp_path / 'data', num_classes=3)


def test_infer_num_classes_rules():
  infer = segmentation_folder.infer_num_classes
  assert infer({'a': {0, 1}, 'b': {0}}) == (2, '0/1')
  assert infer({'a': {0, 255}}) == (2, '0/255')
  assert infer({'a': {0, 4}, 'b': {1}}) == (5, 'class indices')
  with pytest.raises(BadDataError, match='a: 0, 128, 255'):
    infer({'a': {0, 128, 255}})


def test_build_module_runs_tfds_build_with_builder_options(tmp_path, capsys):
  """`python -m sharp_unet_jax.data.datasets.build` builds; bad data exits 2."""
  folder = tmp_path / 'f'
  write_mixed(folder)
  (folder / 'images' / 'a_rgb.png').write_bytes(b'')
  parse = cli_utils.make_flags_parser(tfds_build.Args, description='')
  flags = ['build', f'--manual_dir={folder}', f'--data_dir={tmp_path / "data"}']
  with pytest.raises(SystemExit) as exit_info:
    build_module.main(parse(flags + ['segmentation_folder']))
  assert exit_info.value.code == 2
  error = capsys.readouterr().err
  assert 'Error: segmentation_folder:' in error and 'a_rgb.png is empty' in error
  build_module.main(parse(flags + ['segmentation_folder/skip_bad_files=True']))
  written = tmp_path / 'data' / 'segmentation_folder' / 'rgb8' / '1.0.0'
  assert (written / 'metadata.json').exists()
  assert len(list(written.glob('*-train.array_record-*'))) == 1
