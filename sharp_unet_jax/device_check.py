r"""Measured figures on the attached accelerator (GPU, TPU or, in CI, CPU).

  scripts/device_check.sh                       # configs/isic.py, <= 8 min
  python -m sharp_unet_jax.device_check --config=configs/isic.py \
      [--steps=5] [--rounds=5] [--budget_s=420] [--dtypes=float32,bfloat16]

On every device JAX sees, with the config's image size and batch:

- train step time of ours and of the paper's Keras model on Keras 3's JAX
  back end (the peer of `aot --peer=keras`: same batch, dtype, Adam and
  shardings), timed in alternating rounds (timing.interleaved_times), per
  dtype; `time_ours_over_peer` is the median step time of ours over the
  peer's (timing.TIME_RATIO: lower is better); then, per round, 4 x steps
  calls (at most 30) issued back to back and waited for once
  (timing.queued_ms): the queued step time (`*_queued_ms_median`,
  `queued_time_ours_over_peer`) and the host's time to issue a step
  (`*_issue_ms_median`; close to the queued time, the host's launches bound
  the step);
- tiled prediction (evaluation/inference.TiledPredictor, the config's image
  size as the tile, default overlap and blending) of one image 4 times the
  config's image size in each side: megapixels/s;
- logits of one eval batch on the accelerator against those of the same
  parameters on one CPU device, float32, at full matmul precision on both
  (each platform takes its own form of the network under 'auto'):
  `max_abs_diff` over `max_abs_logit`, and `equal` if within 1e-4 of it.

These are measurements, not compiler estimates. A part that would start after
`budget_s` seconds is skipped and named in `skipped`. The last line is one
JSON object with all of it.
"""

import os

# Keras picks its back end when first imported: JAX, before anything imports it.
os.environ.setdefault('KERAS_BACKEND', 'jax')

import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

from sharp_unet_jax import cli  # noqa: E402
from sharp_unet_jax.benchmarks import benchmark, keras_aot, timing  # noqa: E402
from sharp_unet_jax.compilation import meshes  # noqa: E402
from sharp_unet_jax.evaluation import inference  # noqa: E402
from sharp_unet_jax.training import train  # noqa: E402

FLAGS = flags.FLAGS
# Logits agree if they differ by at most this fraction of the largest logit.
LOGIT_TOLERANCE = 1e-4


class KerasTrain:
  """The paper's Keras model's train step (Keras 3 on JAX) on one batch."""

  def __init__(self, config, trainer: train.Trainer, batch: dict):
    model, optimizer = keras_aot.build(config, trainer.platform)
    replicated = trainer.replicated

    def values(variables):
      return [jax.device_put(v.value, replicated) for v in variables]

    self.state = (
      values(model.trainable_variables),
      values(model.non_trainable_variables),
      values(optimizer.variables),
    )
    self.batch = {'image': batch['image'], 'mask': batch['mask']}
    step = jax.jit(
      keras_aot.keras_train_step(model, optimizer),
      in_shardings=(replicated, trainer.data_sharding),
      out_shardings=replicated,
      donate_argnums=(0,),
      # Compiled the same way as ours (and as `aot --peer=keras` compiles it).
      compiler_options=trainer.compiler_options,
    )
    start = time.perf_counter()
    self.compiled = step.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - start

  def step(self):
    # Like TrainBench.step, it returns the new parameters and the step's
    # outputs, so that both timed steps wait for alike.
    self.state, loss = self.compiled(self.state, self.batch)
    return self.state[0], loss


def train_times(config, steps: int, rounds: int) -> dict:
  """Ours and Keras's train step on the attached devices, interleaved."""
  ours = benchmark.TrainBench(config)
  theirs = KerasTrain(config, ours.trainer, ours.batch)
  ours_ms, theirs_ms = timing.interleaved_times(ours.step, theirs.step, steps, rounds)
  ours_med, theirs_med = statistics.median(ours_ms), statistics.median(theirs_ms)
  queued = {'ours': [], 'peer': []}
  for _ in range(rounds):
    calls = min(4 * steps, timing.MAX_QUEUED_CALLS)
    queued['ours'].append(timing.queued_ms(ours.step, calls))
    queued['peer'].append(timing.queued_ms(theirs.step, calls))
  issue = {who: statistics.median(i for i, _ in q) for who, q in queued.items()}
  queued = {who: statistics.median(t for _, t in q) for who, q in queued.items()}
  return {
    'ours_step_ms_median': ours_med,
    'peer_step_ms_median': theirs_med,
    'time_ours_over_peer': timing.time_ratio(ours_med, theirs_med),
    'round_time_ratios': timing.round_ratios(theirs_ms, ours_ms, steps),
    'ours_queued_ms_median': queued['ours'],
    'peer_queued_ms_median': queued['peer'],
    'queued_time_ours_over_peer': timing.time_ratio(queued['ours'], queued['peer']),
    'ours_issue_ms_median': issue['ours'],
    'peer_issue_ms_median': issue['peer'],
    'ours_images_per_sec': config.batch_size / ours_med * 1e3,
    'peer_images_per_sec': config.batch_size / theirs_med * 1e3,
    'ours_compile_s': ours.compile_s,
    'peer_compile_s': theirs.compile_s,
  }


def tiled_predict(config, repeats: int) -> dict:
  """Megapixels/s of TiledPredictor on a 4 x 4 tile image, all devices."""
  trainer = train.Trainer(config)
  params = trainer.initial_state().params
  devices = trainer.mesh.size
  predictor = inference.TiledPredictor(
    lambda p, x: trainer.model.apply({'params': p}, x),
    params,
    num_classes=config.num_classes,
    depth=config.depth,
    tile_size=config.image_size,
    tile_batch=max(devices, config.eval_batch_size // devices * devices),
    mesh=trainer.mesh,
  )
  height, width = (4 * side for side in config.image_size)
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (height, width, config.num_channels), np.uint8)
  start = time.perf_counter()
  predictor.predict(pixels)
  first_s = time.perf_counter() - start
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    predictor.predict(pixels)
    seconds.append(time.perf_counter() - start)
  median = statistics.median(seconds)
  return {
    'image': [height, width],
    'tile': list(config.image_size),
    'tiles': len(predictor.tiles(height, width)),
    'tile_batch': predictor.tile_batch,
    'megapixels_per_sec': height * width / median / 1e6,
    'seconds_median': median,
    'first_call_s': first_s,
  }


def logits_against_cpu(config) -> dict:
  """One eval batch's float32 logits here and on one CPU device."""
  config = config.copy_and_resolve_references()
  config.dtype = 'float32'
  here = train.Trainer(config)
  cpu = train.Trainer(config, meshes.data_mesh(jax.devices('cpu')[:1]))
  params = here.initial_state().params
  height, width = config.image_size
  shape = (config.eval_batch_size, height, width, config.num_channels)
  images = np.random.default_rng(1).random(shape, np.float32)
  with jax.default_matmul_precision('highest'):
    ours = here.predict(params, here.global_batch({'image': images})['image'])
    on_cpu = cpu.predict(
      jax.device_put(params, cpu.replicated),
      jax.device_put(images, cpu.data_sharding),
    )
  ours, on_cpu = np.asarray(ours), np.asarray(on_cpu)
  diff, scale = float(np.max(np.abs(ours - on_cpu))), float(np.max(np.abs(on_cpu)))
  return {
    'images': int(images.shape[0]),
    'platform': here.platform,
    'max_abs_diff': diff,
    'max_abs_logit': scale,
    'equal': diff <= LOGIT_TOLERANCE * max(scale, 1.0),
  }


def run(config, dtypes, steps: int, rounds: int, budget_s: float) -> dict:
  """Every part in turn, skipping those that would start after budget_s."""
  devices = jax.devices()
  result = {
    'platform': devices[0].platform,
    'device_kind': devices[0].device_kind,
    'devices': len(devices),
    'image_size': list(config.image_size),
    'batch_size': config.batch_size,
    'model': config.model,
    'measured': True,
    'ratio': timing.TIME_RATIO,
    'train': {},
    'skipped': [],
  }
  start = time.perf_counter()
  parts = [(f'train/{d}', d) for d in dtypes] + [
    ('tiled_predict', None),
    ('logits', None),
  ]
  for name, dtype in parts:
    if time.perf_counter() - start > budget_s:
      result['skipped'].append(name)
      continue
    if dtype is not None:
      dtype_config = config.copy_and_resolve_references()
      dtype_config.dtype = dtype
      result['train'][dtype] = train_times(dtype_config, steps, rounds)
    elif name == 'tiled_predict':
      result['tiled_predict'] = tiled_predict(config, rounds)
    else:
      result['logits_vs_cpu'] = logits_against_cpu(config)
    print(f'{name}: done at {time.perf_counter() - start:.0f} s', flush=True)
  result['elapsed_s'] = time.perf_counter() - start
  return result


def main(argv) -> None:
  """Entry point of `python -m sharp_unet_jax.device_check`."""
  del argv
  result = run(FLAGS.config, FLAGS.dtypes, FLAGS.steps, FLAGS.rounds, FLAGS.budget_s)
  print(json.dumps(result), flush=True)


def define_flags() -> None:
  """The program's flags (only when run as a program)."""
  config_flags.DEFINE_config_file('config', 'configs/isic.py', 'Training config file.')
  flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes to time.')
  flags.DEFINE_integer('steps', 5, 'Timed train steps per round, each model.')
  flags.DEFINE_integer('rounds', 5, 'Alternating rounds (and tiled repeats).')
  flags.DEFINE_float('budget_s', 420.0, 'Skip parts that would start later.')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
