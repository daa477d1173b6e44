"""Smoke test of the benchmark command: tiny sizes, the JSON line and its keys."""

import json
import math
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharp_unet_jax.benchmarks import benchmark, timing
from sharp_unet_jax.model import models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = (
  'images_per_sec',
  'step_ms_median',
  'compile_s',
  'peak_rss_mb',
  'gflops_per_image',
  'achieved_gflops',
  'matmul_peak_gflops',
)


def test_cli_prints_json_with_required_keys_as_last_line():
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='')
  command = [
    sys.executable,
    '-m',
    'sharp_unet_jax.benchmarks.benchmark',
    '--model=sharp_unet',
    '--image_size=16,32',
    '--batch_size=2',
    '--filters=4',
    '--depth=1',
    '--steps=2',
    '--warmup=1',
    '--log_every=1',
    '--matmul_size=256',
    '--mode=train',
  ]
  proc = subprocess.run(
    command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert 'step 1/2:' in proc.stderr and 'step 2/2:' in proc.stderr
  for key in REQUIRED:
    assert isinstance(result[key], float) and math.isfinite(result[key]), key
    assert result[key] > 0, key
  assert result['image_size'] == [16, 32] and result['batch_size'] == 2
  # 2 * (3x3 conv) FLOPs of the first layer alone are a lower bound per image.
  assert result['gflops_per_image'] > 2 * 16 * 32 * 9 * 3 * 4 / 1e9
  # The derived rates, from the reported step time (ms) and batch (2 images).
  images_per_sec = 2 / (result['step_ms_median'] / 1e3)
  assert result['images_per_sec'] == pytest.approx(images_per_sec)
  achieved = result['gflops_per_image'] * images_per_sec
  assert result['achieved_gflops'] == pytest.approx(achieved)
  assert result['fraction_of_matmul_peak'] == pytest.approx(
    achieved / result['matmul_peak_gflops']
  )


def conv_flops(h, w, channels, filters, depth, sharp):
  """2 x the multiply-adds of the U-Net's convolutions on one image.

  Counted by hand: a 3x3 'SAME' convolution on h x w makes (3h - 2)(3w - 2)
  products per input and output channel pair (the taps inside the image); a
  2x2 stride-2 transposed convolution one per output pixel and channel pair;
  Sharp U-Net adds a depthwise 3x3 convolution on each skip.
  """
  total, c_in = 0, channels

  def taps(level):
    return (3 * h / 2**level - 2) * (3 * w / 2**level - 2)

  for level in range(depth + 1):
    c = filters * 2**level
    total += 2 * taps(level) * (c_in * c + c * c)
    c_in = c
  for level in reversed(range(depth)):
    c = filters * 2**level
    total += 2 * (h * w / 4**level) * 2 * c * c  # 2x2 up-conv, 2c -> c
    total += 2 * taps(level) * (2 * c * c + c * c)  # on [up, skip], then c -> c
    total += 2 * taps(level) * c * sharp
  return total + 2 * h * w * filters  # the 1x1 head


# Depth 1: the hand count and the ratios hold at any depth. The tests that
# use SIZES compile the same programs once (the session's persistent cache).
SIZES = dict(image_size=(32, 32), batch_size=4, filters=4, depth=1)


def test_infer_mode_costs_less_than_train_in_process():
  # Batch 4: the test session simulates 4 devices.
  infer = benchmark.run(mode='infer', steps=1, warmup=0, matmul_size=128, **SIZES)
  train = benchmark.run(mode='train', steps=1, warmup=0, matmul_size=128, **SIZES)
  # A forward pass is about a third of forward + backward.
  assert 0 < infer['gflops_per_image'] < 0.6 * train['gflops_per_image']
  # XLA's count of the forward pass: the convolutions counted by hand, plus
  # a few per cent of bias adds and ReLUs.
  by_hand = conv_flops(32, 32, 3, 4, 1, sharp=True) / 1e9
  assert by_hand <= infer['gflops_per_image'] <= 1.1 * by_hand
  with pytest.raises(ValueError, match='Unknown mode'):
    benchmark.run(mode='tiled', steps=1, **SIZES)


def test_parse_size():
  assert benchmark.parse_size(['192', '256']) == (192, 256)


def test_bfloat16_compute_is_close_to_float32_on_cpu():
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  f32 = models.UNet(num_filters=8, depth=2)
  bf16 = models.UNet(num_filters=8, depth=2, dtype=jnp.bfloat16)
  # Flax's default initialisation (LeCun normal kernels, zero biases), drawn
  # by NumPy: XLA takes tens of seconds to compile the model's init on CPU.
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(
    lambda leaf: (
      rng.normal(0, 1 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
      if leaf.ndim > 1
      else np.zeros(leaf.shape)
    ).astype(np.float32),
    jax.eval_shape(f32.init, jax.random.key(1), x)['params'],
  )
  # Jitted: one compile each, not one per operation.
  ref = jax.jit(f32.apply)({'params': params}, x)
  out = jax.jit(bf16.apply)({'params': params}, x)
  assert out.dtype == jnp.float32
  scale = float(jnp.max(jnp.abs(ref)))
  assert float(jnp.max(jnp.abs(out - ref))) < 0.05 * scale


def test_baseline_model_comparison_orients_ratios_of_fake_timings(monkeypatch):
  built = []

  class FakeBench:
    def __init__(self, config):
      built.append(config.model)
      self.compile_s = 1.0

    def step(self):
      return None

  def fake_times(step_a, step_b, steps, rounds, warmup):
    assert (steps, rounds, warmup) == (2, 2, 1)
    # The model: 2 ms then 4 ms per round; the baseline: 1 ms then 1 ms.
    return [2.0, 2.0, 4.0, 4.0], [1.0, 1.0, 1.0, 1.0]

  monkeypatch.setattr(benchmark, 'TrainBench', FakeBench)
  monkeypatch.setattr(timing, 'interleaved_times', fake_times)
  result = benchmark.run(
    mode='train', steps=2, rounds=2, warmup=1, model='sharp_unet', baseline_model='unet'
  )
  assert built == ['sharp_unet', 'unet']
  assert result['model'] == 'sharp_unet' and result['baseline_model'] == 'unet'
  assert result['step_time_ratio'] == 3.0  # median 3 ms over median 1 ms
  assert result['round_step_time_ratios'] == [2.0, 4.0]


def test_baseline_model_comparison_builds_both_real_models(monkeypatch):
  flops = {}

  class Recording(benchmark.InferBench):
    def __init__(self, config):
      super().__init__(config)
      flops[config.model] = self.flops

  monkeypatch.setattr(benchmark, 'InferBench', Recording)
  result = benchmark.run(
    mode='infer', steps=1, rounds=1, warmup=0, baseline_model='unet', **SIZES
  )
  assert result['model'] == 'sharp_unet' and set(flops) == {'sharp_unet', 'unet'}
  # The two compiled programs differ by the sharp block's depthwise work only.
  extra = conv_flops(32, 32, 3, 4, 1, True) - conv_flops(32, 32, 3, 4, 1, False)
  assert flops['sharp_unet'] - flops['unet'] == pytest.approx(4 * extra, rel=0.1)


def test_baseline_model_rejects_modes_and_flags_it_cannot_honour():
  with pytest.raises(ValueError, match='--mode=train or infer'):
    benchmark.run(mode='pipeline', baseline_model='unet')
  with pytest.raises(ValueError, match='drop --baseline_model'):
    benchmark.run(mode='train', baseline_model='unet', log_every=5)


def test_round_ratios_are_per_round_medians():
  fast, slow = [1.0, 2.0, 10.0, 10.0], [4.0, 4.0, 20.0, 20.0]
  assert timing.round_ratios(fast, slow, steps=2) == [4.0 / 1.5, 2.0]


def test_pipeline_mode_compares_input_with_the_step(tfds_dir):
  result = benchmark.run(
    mode='pipeline',
    steps=2,
    warmup=1,
    rounds=2,
    **SIZES,
    data_dir=tfds_dir,
    dataset='synthetic_lesions/small',
  )
  assert result['num_examples'] == 64
  assert result['input_images_per_sec'] > 0 and result['step_images_per_sec'] > 0
  assert result['input_over_step'] == pytest.approx(
    result['input_images_per_sec'] / result['step_images_per_sec']
  )


def test_block_waits_for_every_array_of_a_tree():
  chain = jax.jit(lambda x: jnp.tanh(x @ x) @ x)
  x = jnp.ones((1024, 1024)) * 1e-3
  tree = {'a': chain(x), 'b': [chain(x + 1), None, 3], 'c': chain(x + 2)}
  timing.block(tree)
  assert all(
    leaf.is_ready() for leaf in jax.tree.leaves(tree) if hasattr(leaf, 'is_ready')
  )


def test_queued_ms_splits_the_hosts_issue_time_from_the_wait():
  """A fake step that takes 5 ms to issue and 20 ms more to finish: issuing
  4 costs 5 ms each, and the wait adds the last step's 20 ms."""
  finished = []

  class Pending:
    def __init__(self, ready_at):
      self.ready_at = ready_at

    def block_until_ready(self):
      time.sleep(max(0.0, self.ready_at - time.perf_counter()))
      finished.append(self)
      return self

  def step():
    time.sleep(0.005)
    return Pending(time.perf_counter() + 0.020)

  issue, total = timing.queued_ms(step, 4)
  assert issue >= 5
  # The wait adds the last step's 20 ms over 4 calls, 5 ms each (more if the
  # host oversleeps under load).
  assert 4.5 <= total - issue <= 15
  with pytest.raises(ValueError, match='calls=31'):
    timing.queued_ms(step, timing.MAX_QUEUED_CALLS + 1)
  assert len(finished) == 2  # one wait before timing, one after
