"""TFDS' own `tfds build --imports sharp_unet_jax.data.datasets` builds them."""

import os
import shutil
import subprocess
import sys

import numpy as np
import tensorflow_datasets as tfds
import tifffile

from sharp_unet_jax.data import data_source
import sharp_unet_jax.data.datasets  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tfds_build_command_builds_lung_ct(tmp_path):
  manual = tmp_path / 'manual'
  for folder in ('2d_images', '2d_masks'):
    (manual / folder).mkdir(parents=True)
  rng = np.random.default_rng(0)
  for i in range(6):
    tifffile.imwrite(
      manual / '2d_images' / f'ID_{i:04d}.tif', rng.integers(0, 255, (32, 32), np.uint8)
    )
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 255
    tifffile.imwrite(manual / '2d_masks' / f'ID_{i:04d}.tif', mask)
  # The `tfds` program of this Python's environment; `make test` runs in the
  # aot environment layered over the training one, so it also puts the
  # training environment's bin/ on PATH.
  search = os.pathsep.join([os.path.dirname(sys.executable), os.environ['PATH']])
  tfds_program = shutil.which('tfds', path=search)
  assert tfds_program, f'no tfds program next to {sys.executable} or on PATH'
  env = dict(os.environ, PYTHONPATH=REPO)
  result = subprocess.run(
    [
      tfds_program,
      'build',
      '--imports=sharp_unet_jax.data.datasets',
      f'--manual_dir={manual}',
      f'--data_dir={tmp_path / "data"}',
      'lung_ct',
    ],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  builder = tfds.builder('lung_ct', data_dir=str(tmp_path / 'data'))
  sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
  assert sum(sizes[s] for s in ('train', 'validation', 'test')) == 6
  assert sizes['paper_train'] + sizes['paper_test'] == 6
  assert builder.info.file_format.value == 'array_record'
  example = next(data_source.examples(builder, 'train'))
  assert example['image'].shape == (32, 32, 1) and set(np.unique(example['mask'])) <= {
    0,
    1,
  }
