"""Reading images, safe output names, and the predict command end to end."""

import json
import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tifffile

from configs import tiny
from sharp_unet_jax import predict, workdirs
from sharp_unet_jax.data import image_io
from sharp_unet_jax.errors import BadDataError, UserError
from sharp_unet_jax.training import checkpointing, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A workdir with config.json and a checkpoint of a freshly initialised model."""
  config = tiny.get_config()
  path = str(tmp_path_factory.mktemp('workdir'))
  state = train.Trainer(config).initial_state()
  manager = checkpointing.create_manager(path)
  checkpointing.save(manager, 1, state)
  manager.wait_until_finished()
  manager.close()
  workdirs.write_json_atomically(os.path.join(path, 'config.json'), config.to_dict())
  return path


def save(path, array, **kwargs):
  Image.fromarray(array).save(path, **kwargs)
  return str(path)


def test_reads_every_layout_as_the_model_channels(tmp_path):
  rng = np.random.default_rng(0)
  grey = rng.integers(0, 256, (9, 7), dtype=np.uint8)
  rgba = rng.integers(0, 256, (9, 7, 4), dtype=np.uint8)
  grey16 = rng.integers(0, 65536, (9, 7), dtype=np.uint16)
  cases = {
    save(tmp_path / 'grey.png', grey): np.repeat(grey[..., None], 3, -1),
    save(tmp_path / 'rgba.png', rgba): rgba[..., :3],
    save(tmp_path / 'grey16.png', grey16): np.repeat(grey16[..., None], 3, -1),
  }
  palette = Image.fromarray(grey).convert('P')
  palette.save(tmp_path / 'palette.png')
  cases[str(tmp_path / 'palette.png')] = np.asarray(palette.convert('RGB'))
  rgb16 = rng.integers(0, 65536, (9, 7, 3), dtype=np.uint16)
  tifffile.imwrite(tmp_path / 'rgb16.tif', rgb16)
  cases[str(tmp_path / 'rgb16.tif')] = rgb16
  tifffile.imwrite(tmp_path / 'float.tiff', rgb16 / 65535.0, photometric='rgb')
  cases[str(tmp_path / 'float.tiff')] = rgb16
  for path, expected in cases.items():
    pixels = image_io.read_image(path, 3)
    assert pixels.dtype == expected.dtype, path
    np.testing.assert_array_equal(pixels, expected, err_msg=path)
  jpeg = image_io.read_image(save(tmp_path / 'x.jpg', rgba[..., :3], quality=95), 3)
  assert jpeg.shape == (9, 7, 3) and jpeg.dtype == np.uint8
  # A grey model gets RGB as luma, like training's to_channels.
  luma = image_io.read_image(str(tmp_path / 'rgba.png'), 1)
  weights = np.array([0.299, 0.587, 0.114], np.float32)
  expected = np.round(rgba[..., :3].astype(np.float32) @ weights).astype(np.uint8)
  np.testing.assert_array_equal(luma[..., 0], expected)
  np.testing.assert_allclose(
    image_io.to_float(image_io.read_image(str(tmp_path / 'grey16.png'), 1)),
    grey16[..., None] / 65535.0,
    rtol=1e-6,
  )


def test_bad_files_raise_bad_data_error_naming_the_file(tmp_path, monkeypatch):
  good = save(tmp_path / 'good.png', np.zeros((40, 40, 3), np.uint8))
  data = open(good, 'rb').read()
  (tmp_path / 'zero.png').write_bytes(b'')
  (tmp_path / 'truncated.png').write_bytes(data[: len(data) // 2])
  (tmp_path / 'text.png').write_text('not an image')
  (tmp_path / 'bad.tif').write_bytes(b'II*\x00' + b'\x00' * 20)
  for name in ('zero.png', 'truncated.png', 'text.png', 'bad.tif'):
    path = str(tmp_path / name)
    with pytest.raises(BadDataError, match=path):
      image_io.read_image(path, 3)
  # Decompression bombs: over Pillow's pixel limit, both Pillow's and TIFF.
  tifffile.imwrite(tmp_path / 'big.tif', np.zeros((40, 40), np.uint8))
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)
  for name in ('good.png', 'big.tif'):
    with pytest.raises(BadDataError, match=f'{tmp_path / name}.*too large|over the'):
      image_io.read_image(str(tmp_path / name), 3)


@pytest.mark.parametrize(
  'stem', ['..', '.', '../../escape', '/etc/passwd', 'a/../../b', '.hidden', '', 'é ü']
)
def test_output_names_never_escape_the_output_dir(tmp_path, stem):
  out = tmp_path / 'out'
  out.mkdir()
  path = image_io.output_path(str(out), stem, '.png')
  assert os.path.dirname(path) == os.path.realpath(out)
  name = os.path.basename(path)
  assert name.endswith('.png') and not name.startswith('.') and '/' not in name


def test_output_through_a_planted_link_is_refused(tmp_path):
  out = tmp_path / 'out'
  out.mkdir()
  os.symlink(tmp_path / 'elsewhere.png', out / 'x.png')
  with pytest.raises(UserError, match='outside'):
    image_io.output_path(str(out), 'x', '.png')


def test_predict_writes_a_mask_per_input_and_skips_unreadable_ones(workdir, tmp_path):
  inputs = tmp_path / 'in'
  inputs.mkdir()
  rng = np.random.default_rng(1)
  sizes = {'odd.png': (37, 53), 'small.jpg': (5, 9), 'tall.tif': (70, 20)}
  for name, size in sizes.items():
    pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    if name.endswith('.tif'):
      tifffile.imwrite(inputs / name, pixels)
    else:
      save(inputs / name, pixels)
  save(inputs / 'odd.jpeg', rng.integers(0, 256, (8, 8), dtype=np.uint8))  # Same stem.
  save(inputs / '...png', np.zeros((3, 4, 3), np.uint8), format='PNG')
  (inputs / 'empty.png').write_bytes(b'')
  (inputs / 'broken.tiff').write_bytes(b'MM\x00*garbage')
  out = tmp_path / 'out'
  report = predict.predict_files(
    workdir,
    str(inputs),
    str(out),
    tile_size='32',
    overlap=8,
    save_probabilities=True,
    overlays=True,
    progress=False,
  )
  assert sorted(os.path.basename(p) for p in report.skipped) == [
    'broken.tiff',
    'empty.png',
  ]
  assert all(path in reason for path, reason in report.skipped.items())
  # Sorted inputs: odd.jpeg comes first and keeps the plain stem.
  expected = {'odd.png': (8, 8), 'odd-2.png': (37, 53), 'small.png': (5, 9)}
  expected.update({'tall.png': (70, 20), 'png.png': (3, 4)})
  assert sorted(os.listdir(out)) == sorted([*expected, 'overlays', 'probabilities'])
  for name, size in expected.items():
    mask = np.asarray(Image.open(out / name))
    assert mask.shape == size and set(np.unique(mask)) <= {0, 255}
    overlay = np.asarray(Image.open(out / 'overlays' / name))
    assert overlay.shape == (*size, 3)
    stem = name[: -len('.png')]
    probabilities = tifffile.imread(out / 'probabilities' / f'{stem}.tif')
    assert probabilities.shape == size and probabilities.dtype == np.float32
    np.testing.assert_array_equal(mask == 255, probabilities > 0.5)


def test_command_reports_bad_inputs_by_name_and_exits_1(workdir, tmp_path):
  inputs = tmp_path / 'in'
  inputs.mkdir()
  save(inputs / 'good.png', np.full((20, 30, 3), 120, np.uint8))
  (inputs / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n-truncated')
  out = tmp_path / 'out'
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'sharp_unet_jax.predict',
      f'--workdir={workdir}',
      f'--input={inputs}/*.png',
      f'--output_dir={out}',
      '--tta=flips',
      '--blend=constant',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert result.returncode == 1, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  assert f'skipped {inputs / "corrupt.png"}' in result.stderr
  assert os.listdir(out) == ['good.png']
  assert np.asarray(Image.open(out / 'good.png')).shape == (20, 30)


def test_usage_errors_are_one_line(workdir, tmp_path):
  with pytest.raises(UserError, match='matches no image files'):
    predict.predict_files(workdir, str(tmp_path / '*.png'), str(tmp_path))
  save(tmp_path / 'a.png', np.zeros((4, 4, 3), np.uint8))
  with pytest.raises(UserError, match='config.json is missing'):
    predict.predict_files(str(tmp_path), str(tmp_path / 'a.png'), str(tmp_path))
  with pytest.raises(UserError, match='multiples of 2\\*\\*depth = 4'):
    predict.predict_files(
      workdir, str(tmp_path / 'a.png'), str(tmp_path), tile_size='30'
    )
  with pytest.raises(UserError, match='No checkpoint at step 7'):
    predict.predict_files(
      workdir, str(tmp_path / 'a.png'), str(tmp_path), checkpoint='7'
    )
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['image_size'] == [32, 32]


def test_two_processes_share_the_inputs(workdir, tmp_path):
  import two_processes  # noqa: PLC0415

  for folder in ('x', 'y'):
    (tmp_path / 'in' / folder).mkdir(parents=True)
  for i, name in enumerate(['x/a', 'y/a', 'x/b', 'x/c', 'y/d']):
    save(tmp_path / 'in' / f'{name}.png', np.full((16, 16, 3), 40 * i, np.uint8))
  out = tmp_path / 'out'
  outputs = two_processes.run_two_processes(
    [
      sys.executable,
      '-m',
      'sharp_unet_jax.predict',
      f'--workdir={workdir}',
      f'--input={tmp_path}/in/**/*.png',
      f'--output_dir={out}',
    ]
  )
  wrote = [re.search(r'Wrote \d+ of \d+', stdout)[0] for stdout, _ in outputs]
  assert wrote == ['Wrote 3 of 3', 'Wrote 2 of 2']
  assert sorted(os.listdir(out)) == ['a-2.png', 'a.png', 'b.png', 'c.png', 'd.png']
