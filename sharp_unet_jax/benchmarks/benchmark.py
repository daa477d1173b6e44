"""Speed, compile time and memory of the train step, inference and input pipeline.

Usage:

  python -m sharp_unet_jax.benchmarks.benchmark --model=sharp_unet --image_size=128 \\
    --batch_size=4 --filters=32 --steps=20 --mode=train

The last printed line is one JSON object: images_per_sec and step_ms_median
(after compilation), compile_s, peak_rss_mb, gflops_per_image (XLA's cost
analysis of the compiled step), achieved_gflops, matmul_peak_gflops (a large
float32 matmul timed in the same process) and their ratio, among others.
With --baseline_model=M it instead times --model and M in interleaved rounds
and reports step_time_ratio (model over M) and the per-round ratios.
`python -m sharp_unet_jax.benchmarks.peer_benchmark` compares with the paper's
Keras model.
"""

import json
import os
import statistics
import sys
import time
from typing import Optional

from absl import app, flags
import jax
import numpy as np

from sharp_unet_jax.benchmarks import timing

MODES = ('train', 'infer', 'pipeline')


def parse_size(values) -> tuple[int, int]:
  """'128' -> (128, 128); ['192', '256'] -> (192, 256)."""
  sizes = [int(v) for v in values]
  if len(sizes) == 1:
    return sizes[0], sizes[0]
  if len(sizes) == 2:
    return sizes[0], sizes[1]
  raise ValueError(f'A size is H or H,W; got {values}.')


def make_config(
  model: str = 'sharp_unet',
  image_size=(128, 128),
  batch_size: int = 4,
  filters: int = 32,
  depth: int = 4,
  channels: int = 3,
  num_classes: int = 1,
  dtype: str = 'float32',
  data_dir: Optional[str] = None,
  dataset: str = 'synthetic_lesions',
):
  """configs/default.py with the benchmark's sizes."""
  from configs import default  # noqa: PLC0415

  config = default.get_config()
  config.model = model
  config.image_size = tuple(image_size)
  config.batch_size = batch_size
  config.eval_batch_size = batch_size
  config.num_filters = filters
  config.depth = depth
  config.num_channels = channels
  config.num_classes = num_classes
  config.dtype = dtype
  config.data_dir = data_dir
  config.dataset = dataset
  return config


def random_batch(config, rng: np.random.Generator) -> dict:
  """A host batch of the config's shape, like input_pipeline.train_batch."""
  height, width = config.image_size
  shape = (config.batch_size, height, width)
  return {
    'image': rng.random((*shape, config.num_channels), np.float32),
    'mask': rng.integers(0, max(config.num_classes, 2), shape).astype(np.int32),
  }


class TrainBench:
  """A compiled train step over random data; `step()` runs one update."""

  def __init__(self, config, seed: int = 0):
    from sharp_unet_jax.training import train  # noqa: PLC0415

    self.config = config
    self.trainer = train.Trainer(config)
    start = time.perf_counter()
    self.state = self.trainer.initial_state()
    timing.block(self.state)
    self.init_s = time.perf_counter() - start
    local = random_batch(config, np.random.default_rng(seed))
    self.batch = self.trainer.global_batch(local)
    start = time.perf_counter()
    self.compiled = self.trainer.train_step.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - start
    # The cost analysis of an SPMD executable is per device: scale to the mesh.
    self.flops = timing.cost_flops(self.compiled) * self.trainer.mesh.devices.size

  def step(self):
    self.state, step_metrics = self.compiled(self.state, self.batch)
    return self.state.params, step_metrics


class InferBench:
  """Compiled `Trainer.predict` over a random batch."""

  def __init__(self, config, seed: int = 0):
    from sharp_unet_jax.training import train  # noqa: PLC0415

    self.config = config
    self.trainer = train.Trainer(config)
    start = time.perf_counter()
    self.params = self.trainer.initial_state().params
    timing.block(self.params)
    self.init_s = time.perf_counter() - start
    images = random_batch(config, np.random.default_rng(seed))['image']
    self.images = self.trainer.global_batch({'image': images})['image']
    start = time.perf_counter()
    self.compiled = self.trainer.predict.lower(self.params, self.images).compile()
    self.compile_s = time.perf_counter() - start
    # The cost analysis of an SPMD executable is per device: scale to the mesh.
    self.flops = timing.cost_flops(self.compiled) * self.trainer.mesh.devices.size

  def step(self):
    return self.compiled(self.params, self.images)


def _summarise(times_ms, images_per_step, flops_per_step, peak_gflops) -> dict:
  median = statistics.median(times_ms)
  images_per_sec = images_per_step / (median / 1e3)
  gflops_per_image = flops_per_step / images_per_step / 1e9
  achieved = gflops_per_image * images_per_sec
  return {
    'images_per_sec': images_per_sec,
    'step_ms_median': median,
    'step_ms_min': min(times_ms),
    'step_ms_max': max(times_ms),
    'gflops_per_image': gflops_per_image,
    'achieved_gflops': achieved,
    'matmul_peak_gflops': peak_gflops,
    'fraction_of_matmul_peak': achieved / peak_gflops if peak_gflops else None,
  }


def bench_model(
  config, mode: str, steps: int, warmup: int, peak_gflops, log_every: int = 0
) -> dict:
  """Times the train step ('train') or the forward pass ('infer')."""
  bench = (TrainBench if mode == 'train' else InferBench)(config)
  for _ in range(warmup):
    timing.block(bench.step())
  rss_before = timing.current_rss_mb()
  times = timing.time_calls(bench.step, steps, log_every)
  result = _summarise(times, config.batch_size, bench.flops, peak_gflops)
  result.update(
    compile_s=bench.compile_s,
    init_s=bench.init_s,
    rss_growth_mb=timing.current_rss_mb() - rss_before,
  )
  return result


def compare_models(
  config, baseline: str, mode: str, steps: int, rounds: int, warmup: int = 2
) -> dict:
  """Step time of config.model over that of `baseline`, interleaved.

  With the same sizes, `--model=sharp_unet --baseline_model=unet` measures
  the sharp block's overhead (issue target: <= 1.03). Ratios > 1 mean
  config.model is slower.
  """
  bench_class = TrainBench if mode == 'train' else InferBench
  ours = bench_class(config)
  other_config = config.copy_and_resolve_references()
  other_config.model = baseline
  other = bench_class(other_config)
  ours_ms, other_ms = timing.interleaved_times(
    ours.step, other.step, steps, rounds, warmup
  )
  return {
    'baseline_model': baseline,
    'baseline_step_ms_median': statistics.median(other_ms),
    'model_step_ms_median': statistics.median(ours_ms),
    'step_time_ratio': statistics.median(ours_ms) / statistics.median(other_ms),
    'round_step_time_ratios': timing.round_ratios(other_ms, ours_ms, steps),
    'compile_s': ours.compile_s,
    'baseline_compile_s': other.compile_s,
  }


def bench_pipeline(config, steps: int, warmup: int, rounds: int = 3) -> dict:
  """Input throughput against the train step's consumption, side by side.

  Times `rounds` alternating rounds of `steps` input batches (examples read
  by index, decoded and resized in the worker threads, made global arrays)
  and `steps` train steps of the same config on one batch, and compares the
  medians: input_over_step > 1 means the input keeps ahead of the step.
  """
  from sharp_unet_jax.data import input_pipeline  # noqa: PLC0415

  bench = TrainBench(config)
  start = time.perf_counter()
  data = input_pipeline.load_split(config, config.train_split)
  load_s = time.perf_counter() - start
  counter = iter(range(10**9))

  def one_batch():
    local = input_pipeline.train_batch(data, config, next(counter))
    return bench.trainer.global_batch(local)

  for _ in range(warmup):
    timing.block(one_batch())
    timing.block(bench.step())
  input_ms, step_ms = [], []
  for _ in range(rounds):
    input_ms += timing.time_calls(one_batch, steps)
    step_ms += timing.time_calls(bench.step, steps)
  result = _summarise(step_ms, config.batch_size, bench.flops, None)
  input_rate = config.batch_size / (statistics.median(input_ms) / 1e3)
  result.update(
    input_images_per_sec=input_rate,
    input_ms_median=statistics.median(input_ms),
    step_images_per_sec=result['images_per_sec'],
    input_over_step=input_rate / result['images_per_sec'],
    compile_s=bench.compile_s,
    load_s=load_s,
    num_examples=len(data),
    input_workers=int(config.get('input_workers', 4)),
  )
  return result


def enable_compilation_cache(path: Optional[str]) -> None:
  """Turns on JAX's persistent compilation cache in `path` (None: off)."""
  if not path:
    return
  jax.config.update('jax_compilation_cache_dir', os.path.expanduser(path))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def run(
  mode: str = 'train',
  steps: int = 20,
  warmup: int = 2,
  matmul_size: int = 2048,
  baseline_model: Optional[str] = None,
  rounds: int = 5,
  log_every: int = 0,
  **config_kwargs,
) -> dict:
  """Runs one benchmark and returns its result dict (see the module doc)."""
  if mode not in MODES:
    raise ValueError(f'Unknown mode {mode!r}; use one of {MODES}.')
  config = make_config(**config_kwargs)
  if baseline_model and mode not in ('train', 'infer'):
    raise ValueError('--baseline_model needs --mode=train or infer.')
  if baseline_model and log_every:
    raise ValueError('--log_every times one model; drop --baseline_model.')
  timed = mode != 'pipeline' and not baseline_model
  peak = timing.matmul_peak_gflops(matmul_size) if timed else None
  if baseline_model:
    result = compare_models(config, baseline_model, mode, steps, rounds, warmup)
  elif mode in ('train', 'infer'):
    result = bench_model(config, mode, steps, warmup, peak, log_every)
  else:
    result = bench_pipeline(config, steps, warmup, rounds)
  result.update(
    mode=mode,
    model=config.model,
    image_size=list(config.image_size),
    batch_size=config.batch_size,
    filters=config.num_filters,
    dtype=config.dtype,
    steps=steps,
    backend=jax.default_backend(),
    device_count=jax.device_count(),
    peak_rss_mb=timing.peak_rss_mb(),
  )
  return result


# The keyword arguments of `run` that are flags of the same name.
_RUN_FLAGS = (
  'mode',
  'steps',
  'warmup',
  'matmul_size',
  'baseline_model',
  'rounds',
  'log_every',
  'model',
  'batch_size',
  'filters',
  'depth',
  'channels',
  'num_classes',
  'dtype',
  'data_dir',
  'dataset',
)


def main(argv) -> None:
  """Entry point of `python -m sharp_unet_jax.benchmarks.benchmark`."""
  del argv
  values = flags.FLAGS
  enable_compilation_cache(values.compilation_cache_dir)
  result = run(
    image_size=parse_size(values.image_size),
    **{name: values[name].value for name in _RUN_FLAGS},
  )
  sys.stdout.flush()
  print(json.dumps(result, sort_keys=True))


def define_flags() -> None:
  """Defines the command's flags; called only when run as a program."""
  flags.DEFINE_enum('model', 'sharp_unet', ['sharp_unet', 'unet'], 'Model.')
  flags.DEFINE_list('image_size', ['128'], 'H or H,W of the input.')
  flags.DEFINE_integer('batch_size', 4, 'Global batch size.')
  flags.DEFINE_integer('filters', 32, 'Channels of the first level.')
  flags.DEFINE_integer('depth', 4, 'Pooling levels.')
  flags.DEFINE_integer('channels', 3, 'Input image channels.')
  flags.DEFINE_integer('num_classes', 1, 'Output classes.')
  flags.DEFINE_integer('steps', 20, 'Timed steps after warm-up.')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
  flags.DEFINE_enum('mode', 'train', MODES, 'What to time.')
  flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute.')
  flags.DEFINE_string('data_dir', None, 'TFDS data dir (pipeline mode).')
  flags.DEFINE_string('dataset', 'synthetic_lesions', 'TFDS data set.')
  flags.DEFINE_string(
    'compilation_cache_dir', None, 'JAX persistent compilation cache folder.'
  )
  flags.DEFINE_integer('matmul_size', 2048, 'Side of the peak matmul.')
  flags.DEFINE_enum(
    'baseline_model',
    None,
    ['sharp_unet', 'unet'],
    'Also time this model, interleaved, and report the step-time ratio.',
  )
  flags.DEFINE_integer('rounds', 5, 'Interleaved rounds of --steps each.')
  flags.DEFINE_integer(
    'log_every', 0, 'train/infer: log step time and RSS every N timed steps.'
  )


if __name__ == '__main__':
  define_flags()
  app.run(main)
