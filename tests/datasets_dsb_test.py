"""The dsb2018 builder: one folder per image, one mask per nucleus."""

from datasets_pairs_test import build, load_all
import numpy as np
from PIL import Image
import pytest

from sharp_unet_jax.errors import BadDataError

SHAPE = (24, 28)


def _nuclei(n: int) -> list[np.ndarray]:
  """n + 1 disjoint square nuclei as 0/255 masks."""
  masks = []
  for k in range(n + 1):
    mask = np.zeros(SHAPE, np.uint8)
    mask[2 + 5 * k : 5 + 5 * k, 3:7] = 255
    masks.append(mask)
  return masks


def write_dsb(root, count=6):
  """Writes stage1_train/<id>/images/<id>.png (RGBA) and masks/*.png."""
  rng = np.random.default_rng(3)
  ids = [f'{i:02x}' * 8 for i in range(count)]
  for n, image_id in enumerate(ids):
    folder = root / 'stage1_train' / image_id
    (folder / 'images').mkdir(parents=True)
    (folder / 'masks').mkdir()
    rgba = rng.integers(0, 256, SHAPE + (4,), dtype=np.uint8)
    Image.fromarray(rgba).save(folder / 'images' / f'{image_id}.png')
    for k, mask in enumerate(_nuclei(n % 3)):
      Image.fromarray(mask).save(folder / 'masks' / f'm{k}.png')
  return ids


@pytest.fixture(scope='module')
def dsb(tmp_path_factory):
  root = tmp_path_factory.mktemp('dsb')
  ids = write_dsb(root / 'manual')
  return build('dsb2018', root / 'manual', root / 'data'), ids, root / 'manual'


def test_masks_are_merged_and_instances_numbered(dsb):
  builder, ids, manual = dsb
  examples = load_all(builder)
  assert sum(len(examples[s]) for s in ('train', 'validation', 'test')) == len(ids)
  for ex in examples['paper_train'] + examples['paper_test']:
    image_id = ex['id'].decode()
    n = ids.index(image_id) % 3
    rgba = np.asarray(
      Image.open(manual / 'stage1_train' / image_id / 'images' / f'{image_id}.png')
    )
    np.testing.assert_array_equal(ex['image'], rgba[..., :3])
    assert ex['instances'].dtype == np.uint16 and ex['instances'].shape == SHAPE + (1,)
    assert set(np.unique(ex['instances'])) == set(range(n + 2))
    for k, nucleus in enumerate(_nuclei(n), start=1):
      assert np.all(ex['instances'][..., 0][nucleus > 0] == k)
    np.testing.assert_array_equal(ex['mask'][..., 0], np.max(_nuclei(n), axis=0) // 255)
  assert 'CC0' in builder.info.description


def test_image_without_masks_and_bad_nucleus_mask_are_named(tmp_path):
  ids = write_dsb(tmp_path / 'manual')
  for mask in (tmp_path / 'manual' / 'stage1_train' / ids[1] / 'masks').iterdir():
    mask.unlink()
  with pytest.raises(BadDataError, match=rf'1 image\(s\) without a mask.*{ids[1]}.png'):
    build('dsb2018', tmp_path / 'manual', tmp_path / 'data')
  (tmp_path / 'manual' / 'stage1_train' / ids[1]).rename(tmp_path / 'removed')
  wrong_size = tmp_path / 'manual' / 'stage1_train' / ids[2] / 'masks' / 'm0.png'
  Image.fromarray(np.zeros((5, 5), np.uint8)).save(wrong_size)
  with pytest.raises(BadDataError, match=rf'{ids[2]}/masks/m0.png is 5x5 pixels'):
    build('dsb2018', tmp_path / 'manual', tmp_path / 'data2')
