"""Tests of the builders' shared helpers: decoding, masks, layout, splits."""

import io
import pathlib
import zipfile

import numpy as np
from PIL import Image
import pytest
import tifffile

from sharp_unet_jax.data.datasets import common, layout, splits
from sharp_unet_jax.errors import BadDataError, UserError


def _png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


def _tiff(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  tifffile.imwrite(buffer, array)
  return buffer.getvalue()


# --- Files and decoding -------------------------------------------------------


def test_read_bytes_names_empty_and_missing_files(tmp_path):
  empty = tmp_path / 'empty.png'
  empty.write_bytes(b'')
  with pytest.raises(BadDataError, match=r'empty\.png is empty \(0 bytes\)'):
    common.SourceFile(empty).read_bytes()
  with pytest.raises(BadDataError, match='cannot read .*absent.png'):
    common.SourceFile(tmp_path / 'absent.png').read_bytes()


def test_zip_members_read_and_bad_archive_is_named(tmp_path):
  archive = tmp_path / 'a.zip'
  with zipfile.ZipFile(archive, 'w') as zf:
    zf.writestr('top/x.png', b'abc')
  source = common.SourceFile(archive, 'top/x.png')
  assert source.read_bytes() == b'abc'
  assert source.stem == 'x'
  assert source.name == f'{archive}:top/x.png'
  broken = tmp_path / 'broken.zip'
  broken.write_bytes(b'not a zip at all')
  with pytest.raises(BadDataError, match='broken.zip'):
    common.SourceFile(broken, 'x.png').read_bytes()


def test_errors_are_user_errors():
  assert issubclass(BadDataError, UserError)


@pytest.mark.parametrize(
  'array',
  [
    np.arange(12, dtype=np.uint8).reshape(3, 4),
    np.arange(36, dtype=np.uint8).reshape(3, 4, 3),
    np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000,
  ],
)
def test_decode_png_and_tiff_round_trip(array):
  for data in (_png(array), _tiff(array)):
    decoded = common.decode_image(data, 'x')
    np.testing.assert_array_equal(decoded.array, array)
    assert decoded.array.dtype == array.dtype


def test_corrupt_and_truncated_images_name_the_file():
  with pytest.raises(BadDataError, match='cannot decode bad.png: not an image format'):
    common.decode_image(b'\x89PNG garbage', 'bad.png')
  jpeg = io.BytesIO()
  Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(jpeg, format='JPEG')
  with pytest.raises(BadDataError, match='cut.jpg'):
    common.decode_image(jpeg.getvalue()[:200], 'cut.jpg')


def test_decompression_bomb_is_bad_data(monkeypatch):
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
  big = np.zeros((20, 20), np.uint8)  # 400 pixels: over 2x the limit.
  with pytest.raises(BadDataError, match='bomb.png is too large.*MAX_IMAGE_PIXELS'):
    common.decode_image(_png(big), 'bomb.png')
  medium = np.zeros((12, 12), np.uint8)  # 144 pixels: Pillow only warns.
  with pytest.raises(BadDataError, match='medium.png is too large'):
    common.decode_image(_png(medium), 'medium.png')
  with pytest.raises(BadDataError, match='bomb.tif is 20x20 pixels, over the limit'):
    common.decode_image(_tiff(big), 'bomb.tif')


def test_palette_image_keeps_indices_for_masks_and_colours_for_images():
  img = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode='P')
  img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
  buffer = io.BytesIO()
  img.save(buffer, format='PNG')
  decoded = common.decode_image(buffer.getvalue(), 'p.png')
  np.testing.assert_array_equal(common.mask_values(decoded, 'p.png'), [[0, 1], [2, 1]])
  rgb = common.to_image(decoded, 3, np.uint8, 'p.png')
  np.testing.assert_array_equal(rgb[0, 1], [255, 0, 0])


# --- Image conversion ----------------------------------------------------------


def test_to_image_channels_and_bit_depth():
  grey = common.DecodedImage(np.array([[0, 255]], np.uint8), 'PNG')
  assert common.to_image(grey, 3, np.uint8, 'g').shape == (1, 2, 3)
  np.testing.assert_array_equal(
    common.to_image(grey, 1, np.uint16, 'g')[..., 0], [[0, 65535]]
  )
  rgba = common.DecodedImage(np.zeros((2, 2, 4), np.uint8), 'PNG')
  assert common.to_image(rgba, 3, np.uint8, 'a').shape == (2, 2, 3)
  deep = common.DecodedImage(np.array([[0, 257, 65535]], np.uint16), 'TIFF')
  np.testing.assert_array_equal(
    common.to_image(deep, 1, np.uint8, 'd')[..., 0], [[0, 1, 255]]
  )
  unit = common.DecodedImage(np.array([[0.0, 0.5, 1.0]], np.float32), 'TIFF')
  np.testing.assert_array_equal(
    common.to_image(unit, 1, np.uint8, 'f')[..., 0], [[0, 128, 255]]
  )


def test_to_image_rejects_colour_as_grey_and_odd_pixels():
  colour = common.DecodedImage(np.array([[[1, 2, 3]]], np.uint8), 'PNG')
  with pytest.raises(BadDataError, match='c.png is a colour image'):
    common.to_image(colour, 1, np.uint8, 'c.png')
  hu = common.DecodedImage(np.array([[-1000, 200]], np.int16), 'TIFF')
  with pytest.raises(BadDataError, match=r'hu.tif has int16 pixels in \[-1000, 200\]'):
    common.to_image(hu, 1, np.uint8, 'hu.tif')
  floats = common.DecodedImage(np.array([[0.0, 7.5]], np.float32), 'TIFF')
  with pytest.raises(BadDataError, match='floating-point pixels'):
    common.to_image(floats, 1, np.uint8, 'f.tif')


# --- Masks ---------------------------------------------------------------------------


@pytest.mark.parametrize('top', [1, 255, 65535])
def test_binary_mask_encodings(top):
  values = np.array([[0, top], [top, 0]], np.uint16 if top > 255 else np.uint8)
  mask = common.binary_mask(values, 'm')
  assert mask.dtype == np.uint8 and mask.shape == (2, 2, 1)
  np.testing.assert_array_equal(mask[..., 0], [[0, 1], [1, 0]])


def test_binary_mask_rejects_other_values_naming_them():
  with pytest.raises(BadDataError, match=r'm.png has mask values 0, 128, 255, which'):
    common.binary_mask(np.array([0, 128, 255]), 'm.png')


def test_class_mask_rejects_indices_out_of_range():
  np.testing.assert_array_equal(
    common.class_mask(np.array([[0, 3]]), 4, 'm')[..., 0], [[0, 3]]
  )
  with pytest.raises(BadDataError, match=r'm.nii has mask values 4, 7 .*0\.\.3'):
    common.class_mask(np.array([[0, 4, 7]]), 4, 'm.nii')


def test_mask_values_collapses_grey_rgb_and_rejects_colour_masks():
  grey_rgb = np.repeat(np.array([[0, 255]], np.uint8)[..., None], 3, axis=-1)
  values = common.mask_values(common.DecodedImage(grey_rgb, 'PNG'), 'm')
  np.testing.assert_array_equal(values, [[0, 255]])
  colour = grey_rgb.copy()
  colour[0, 1, 2] = 7
  with pytest.raises(BadDataError, match='c.png is a colour mask'):
    common.mask_values(common.DecodedImage(colour, 'PNG'), 'c.png')
  with pytest.raises(BadDataError, match='non-integer'):
    common.mask_values(common.DecodedImage(np.array([[0.5]]), 'NIfTI'), 'f')


def test_check_same_size_names_mask_and_both_sizes():
  with pytest.raises(
    BadDataError, match='m.png is 4x5 pixels but its image i.png is 4x6'
  ):
    common.check_same_size(np.zeros((4, 6, 3)), np.zeros((4, 5, 1)), 'i.png', 'm.png')


# --- Layout ---------------------------------------------------------------------------


def test_find_dir_tolerates_case_spaces_and_depth(tmp_path):
  (tmp_path / 'CVC-ClinicDB' / 'Ground_Truth').mkdir(parents=True)
  found = layout.find_dir(tmp_path, ['Ground Truth'])
  assert found == tmp_path / 'CVC-ClinicDB' / 'Ground_Truth'
  assert layout.find_dir(tmp_path, ['Original']) is None
  (tmp_path / 'CVC-ClinicDB' / 'groundtruth').mkdir()
  with pytest.raises(BadDataError, match='several folders match'):
    layout.find_dir(tmp_path, ['Ground Truth'])


def test_list_images_rejects_duplicate_stems(tmp_path):
  (tmp_path / '1.tif').write_bytes(b'x')
  (tmp_path / 'notes.txt').write_bytes(b'x')
  (tmp_path / '.hidden.png').write_bytes(b'x')
  assert list(layout.list_images(tmp_path)) == ['1']
  (tmp_path / '1.png').write_bytes(b'x')
  with pytest.raises(BadDataError, match='several files named 1: 1.png and 1.tif'):
    layout.list_images(tmp_path)


def test_pair_by_stem_returns_unpaired_files():
  files = {s: common.SourceFile(pathlib.Path(s + '.png')) for s in 'abc'}
  pairs, lone_images, lone_masks = layout.pair_by_stem(
    {k: files[k] for k in 'ab'}, {k: files[k] for k in 'bc'}
  )
  assert [p[0] for p in pairs] == ['b']
  assert [f.stem for f in lone_images] == ['a']
  assert [f.stem for f in lone_masks] == ['c']


# --- Splits ---------------------------------------------------------------------------


def test_standard_split_sizes_disjoint_and_order_independent():
  ids = [f'img_{i:03d}' for i in range(267)]
  result = splits.standard_split(ids)
  assert [len(result[s]) for s in splits.STANDARD_SPLITS] == [187, 27, 53]
  assert sorted(sum(result.values(), [])) == ids
  assert splits.standard_split(list(reversed(ids))) == result
  # Hash order, not name order: the test part is not the last names.
  assert result['test'] != ids[-53:]


def test_small_sets_get_every_split_and_too_small_ones_fail():
  result = splits.standard_split(['a', 'b', 'c'])
  assert all(len(result[s]) == 1 for s in splits.STANDARD_SPLITS)
  with pytest.raises(BadDataError, match='only 2 example'):
    splits.standard_split(['a', 'b'])


def test_ordered_split_keeps_neighbours_together():
  result = splits.ordered_split([f'page_{i:02d}' for i in range(30)])
  assert result['train'][-1] == 'page_20'
  assert result['validation'] == ['page_21', 'page_22', 'page_23']
  assert result['test'][0] == 'page_24' and len(result['test']) == 6


def test_paper_split_matches_scikit_learn_protocol():
  ids = [f'{i:02d}' for i in range(10)]
  result = splits.paper_split(reversed(ids), seed=42)
  # sklearn.model_selection.train_test_split(range(10), test_size=0.2,
  # random_state=42) puts 8 and 1 in the test part.
  assert result['paper_test'] == ['01', '08']
  assert len(result['paper_train']) == 8
  assert set(result['paper_train']).isdisjoint(result['paper_test'])
  assert len(splits.paper_split(map(str, range(2594)))['paper_test']) == 519
  assert splits.paper_split(ids, seed=0) != result
