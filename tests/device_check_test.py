"""scripts/device_check.sh on this CPU host with the tiny config, so that the
command meant for a GPU or TPU VM keeps working."""

import json
import os
import subprocess
import sys

import pytest

from sharp_unet_jax.benchmarks import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_device_check_measures_every_part_and_prints_one_json_line():
  command = [
    os.path.join(ROOT, 'scripts', 'device_check.sh'),
    '--config=configs/tiny.py',
    '--config.depth=1',  # every part runs at any depth; less to compile
    '--dtypes=float32',
    '--steps=1',
    '--rounds=1',
    '--budget_s=600',  # every part starts, even on a loaded CI host
  ]
  env = dict(os.environ, PYTHON=sys.executable)
  done = subprocess.run(
    command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
  )
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result['measured'] and result['skipped'] == []
  assert result['ratio'] == timing.TIME_RATIO
  # conftest's 4 simulated CPU devices stand in for the accelerator's.
  assert result['platform'] == 'cpu' and result['devices'] == 4
  train = result['train']['float32']
  assert train['time_ours_over_peer'] == pytest.approx(
    train['ours_step_ms_median'] / train['peer_step_ms_median']
  )
  assert train['ours_images_per_sec'] > 0 and train['peer_images_per_sec'] > 0
  assert train['queued_time_ours_over_peer'] == pytest.approx(
    train['ours_queued_ms_median'] / train['peer_queued_ms_median']
  )
  for who in ('ours', 'peer'):
    assert train[f'{who}_issue_ms_median'] > 0
  tiled = result['tiled_predict']
  assert tiled['image'] == [128, 128] and tiled['tiles'] >= 16
  assert tiled['megapixels_per_sec'] > 0
  logits = result['logits_vs_cpu']
  assert logits['images'] == 8 and logits['max_abs_logit'] > 0
  assert logits['equal'], logits
