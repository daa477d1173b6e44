r"""Peak host memory of training against the size of the data set.

  python -m sharp_unet_jax.benchmarks.memory_benchmark --out_dir=/tmp/membench \
      [--counts=1000,10000] [--size=256] [--steps=30]

For each count, writes a folder of that many PNG images and masks (the
layout of datasets/segmentation_folder.py), builds it with a 1-step run of
main.py on configs/folder.py, then trains 30 steps in a fresh workdir under
`/usr/bin/time -v` and reads its peak resident set size. The model is tiny
(4 filters, depth 2, batch 2) so that the data dominates host memory. Prints
one line per count and writes OUT/memory.json.
"""

import json
import os
import re
import subprocess
import sys
from typing import Sequence

from absl import app, flags
import numpy as np
from PIL import Image

# The checkout's root: sharp_unet_jax/benchmarks/ is two folders below it.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = flags.FLAGS


def write_folder(folder: str, count: int, size: int) -> None:
  """Writes `count` smooth RGB images with one disc each and binary masks."""
  for sub in ('images', 'masks'):
    os.makedirs(os.path.join(folder, sub), exist_ok=True)
  rows, cols = np.mgrid[:size, :size]
  for i in range(count):
    name = f'img{i:05d}.png'
    if os.path.exists(os.path.join(folder, 'masks', name)):
      continue  # written by an earlier run
    rng = np.random.default_rng(i)
    r, c = rng.integers(size // 4, 3 * size // 4, 2)
    mask = (rows - r) ** 2 + (cols - c) ** 2 < rng.integers(8, size // 4) ** 2
    base = rng.integers(0, 256, 3)
    image = (base + 40 * np.sin(rows / 9.0 + i)[..., None] + 80 * mask[..., None]) % 256
    Image.fromarray(image.astype(np.uint8)).save(os.path.join(folder, 'images', name))
    Image.fromarray(mask.astype(np.uint8) * 255).save(
      os.path.join(folder, 'masks', name)
    )


def train_command(folder: str, workdir: str, steps: int, size: int) -> list[str]:
  return [
    sys.executable,
    os.path.join(REPO, 'main.py'),
    '--config=' + os.path.join(REPO, 'configs', 'folder.py'),
    f'--config.data_dir={folder}',
    f'--workdir={workdir}',
    f'--config.num_train_steps={steps}',
    f'--config.image_size={size},{size}',
    '--config.num_filters=4',
    '--config.depth=2',
    '--config.batch_size=2',
  ]


def peak_rss_mb(command: Sequence[str]) -> float:
  """Runs `command` under /usr/bin/time -v; returns its peak RSS in MB."""
  result = subprocess.run(
    ['/usr/bin/time', '-v', *command], cwd=REPO, capture_output=True, text=True
  )
  if result.returncode != 0:
    raise RuntimeError(f'{command[1]} failed:\n{result.stderr[-3000:]}')
  kbytes = re.search(r'Maximum resident set size \(kbytes\): (\d+)', result.stderr)
  return int(kbytes.group(1)) / 1024.0


def measure(out_dir: str, count: int, size: int, steps: int) -> dict:
  """Writes, builds and trains one folder; returns its peak RSS."""
  folder = os.path.join(out_dir, f'folder_{count}_{size}')
  write_folder(folder, count, size)
  build_dir = os.path.join(out_dir, f'build_{count}_{size}')
  subprocess.run(
    train_command(folder, build_dir, 1, size), cwd=REPO, check=True, capture_output=True
  )
  workdir = os.path.join(out_dir, f'train_{count}_{size}')
  subprocess.run(['rm', '-rf', workdir], check=True)
  peak = peak_rss_mb(train_command(folder, workdir, steps, size))
  return {'images': count, 'size': size, 'steps': steps, 'peak_rss_mb': peak}


def main(argv) -> None:
  """Entry point of `python -m sharp_unet_jax.benchmarks.memory_benchmark`."""
  del argv
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  results = []
  for count in (int(c) for c in FLAGS.counts.split(',')):
    results.append(measure(FLAGS.out_dir, count, FLAGS.size, FLAGS.steps))
    print(
      f'{count} images at {FLAGS.size}x{FLAGS.size}: peak RSS '
      f'{results[-1]["peak_rss_mb"]:.0f} MB',
      flush=True,
    )
  if len(results) > 1:
    ratio = results[-1]['peak_rss_mb'] / results[0]['peak_rss_mb']
    print(f'ratio largest / smallest: {ratio:.3f}')
  with open(os.path.join(FLAGS.out_dir, 'memory.json'), 'w') as f:
    json.dump(results, f, indent=2)


if __name__ == '__main__':
  flags.DEFINE_string('out_dir', None, 'Folder for the data sets and workdirs.')
  flags.DEFINE_string('counts', '1000,10000', 'Data set sizes, comma-separated.')
  flags.DEFINE_integer('size', 256, 'Image side in pixels.')
  flags.DEFINE_integer('steps', 30, 'Training steps of the measured run.')
  flags.mark_flags_as_required(['out_dir'])
  app.run(main)
