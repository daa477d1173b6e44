"""Ours against the paper's Keras model (TensorFlow), side by side in one process.

Usage:

  python -m sharp_unet_jax.benchmarks.peer_benchmark --model=sharp_unet \\
    --image_size=128 --batch_size=4 --filters=32 --steps=5 --rounds=6

Both models have the same architecture, batch, input size and optimiser (Adam
1e-3, eps 1e-7, cross-entropy). The timed steps alternate in rounds (`steps`
of ours, then `steps` of Keras, `rounds` times), so load from other processes
hits both alike; the ratios are of medians over all timed steps. The last
printed line is one JSON object with, per mode, images/s of both and
`time_ours_over_peer`, the median step time of ours over Keras's
(timing.TIME_RATIO: lower is better; below 1 ours is faster).
"""

import json
import statistics
import sys
import time

from absl import app, flags
import numpy as np

from sharp_unet_jax.benchmarks import benchmark, timing

# --model, --image_size, --batch_size, --filters, --depth, --steps (per round)
# and --rounds are benchmarks/benchmark.py's flags.


class KerasBench:
  """The paper's Keras model, compiled like the paper, on a random batch."""

  def __init__(self, config, mode: str, jit_compile='auto', seed: int = 0):
    import tensorflow as tf  # noqa: PLC0415

    from sharp_unet_jax.interop import keras_reference  # noqa: PLC0415

    height, width = config.image_size
    self.model = keras_reference.build_keras_unet(
      (height, width, config.num_channels),
      config.num_classes,
      num_filters=config.num_filters,
      depth=config.depth,
      sharp=config.model == 'sharp_unet',
    )
    keras_reference.compile_like_paper(
      self.model, config.num_classes, jit_compile=jit_compile
    )
    batch = benchmark.random_batch(config, np.random.default_rng(seed))
    self.images = tf.constant(batch['image'])
    mask = batch['mask']
    self.masks = tf.constant(
      mask[..., None].astype(np.float32) if config.num_classes == 1 else mask
    )
    self.mode = mode
    start = time.perf_counter()
    self.step()
    self.compile_s = time.perf_counter() - start

  def step(self):
    if self.mode == 'train':
      return self.model.train_on_batch(self.images, self.masks)
    return self.model.predict_on_batch(self.images)


def compare(config, mode: str, steps: int, rounds: int, jit_compile='auto') -> dict:
  """Alternates timed steps of ours and Keras; returns both and the ratio."""
  ours = (benchmark.TrainBench if mode == 'train' else benchmark.InferBench)(config)
  theirs = KerasBench(config, mode, jit_compile)
  ours_ms, theirs_ms = timing.interleaved_times(ours.step, theirs.step, steps, rounds)
  ours_med, theirs_med = statistics.median(ours_ms), statistics.median(theirs_ms)
  # Per-round ratios show how stable the comparison is under load.
  round_ratios = timing.round_ratios(theirs_ms, ours_ms, steps)
  batch = config.batch_size
  return {
    'ours_images_per_sec': batch / ours_med * 1e3,
    'keras_images_per_sec': batch / theirs_med * 1e3,
    'ours_step_ms_median': ours_med,
    'keras_step_ms_median': theirs_med,
    'ratio': timing.TIME_RATIO,
    'time_ours_over_peer': timing.time_ratio(ours_med, theirs_med),
    'round_time_ratios': round_ratios,
    'ours_compile_s': ours.compile_s,
    'keras_first_step_s': theirs.compile_s,
    'gflops_per_image': ours.flops / batch / 1e9,
  }


def main(argv) -> None:
  """Entry point of `python -m sharp_unet_jax.benchmarks.peer_benchmark`."""
  del argv
  fv = flags.FLAGS
  config = benchmark.make_config(
    model=fv.model,
    image_size=benchmark.parse_size(fv.image_size),
    batch_size=fv.batch_size,
    filters=fv.filters,
    depth=fv.depth,
  )
  jit = {'auto': 'auto', 'true': True, 'false': False}[flags.FLAGS.keras_jit_compile]
  result = {
    'model': config.model,
    'image_size': list(config.image_size),
    'batch_size': config.batch_size,
    'filters': config.num_filters,
    'keras_jit_compile': flags.FLAGS.keras_jit_compile,
    'matmul_peak_gflops': timing.matmul_peak_gflops(),
  }
  for mode in flags.FLAGS.modes:
    result[mode] = compare(config, mode, fv.steps, flags.FLAGS.rounds, jit)
    ratio = result[mode]['time_ours_over_peer']
    print(f'{mode}: {timing.TIME_RATIO} (Keras): {ratio:.3f}')
  result['peak_rss_mb'] = timing.peak_rss_mb()
  sys.stdout.flush()
  print(json.dumps(result, sort_keys=True))


def define_flags() -> None:
  """Defines the command's flags; called only when run as a program."""
  benchmark.define_flags()
  flags.DEFINE_list('modes', ['train', 'infer'], 'train and/or infer.')
  flags.DEFINE_enum(
    'keras_jit_compile',
    'auto',
    ['auto', 'true', 'false'],
    "Keras' jit_compile; 'auto' is Keras' default (no XLA on CPU-only hosts).",
  )


if __name__ == '__main__':
  define_flags()
  app.run(main)
