"""Crashes, preemption and multi-process runs, with real subprocesses.

Every interrupted run here is `main.py` on the tiny config, in a process of
its own, like a user's launch. The reference is the same training
uninterrupted, run in the test's own process on the same 4 devices: its
parameters are bitwise those of a main.py run. Runs on several processes, and
hosts that fail, are in host_failure_test.py.
"""

import logging as pylogging
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
import two_processes

from sharp_unet_jax.training import checkpointing, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8


def main_command(workdir, data_dir, *extra):
  return two_processes.tiny_main_command(workdir, data_dir, STEPS, *extra)


def run(command, devices=4, timeout=300, **kwargs):
  env = dict(os.environ, XLA_FLAGS=two_processes.xla_flags(devices))
  return subprocess.run(
    command,
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
    **kwargs,
  )


def final_params(workdir, config):
  trainer = train.Trainer(config)
  manager = checkpointing.create_manager(workdir)
  state = checkpointing.restore(manager, trainer.initial_state())
  return int(state.step), jax.device_get(state.params)


def assert_same_params(a, b, atol=0.0):
  leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    if atol:
      np.testing.assert_allclose(x, y, atol=atol, rtol=0)
    else:
      np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def reference(tfds_dir, tmp_path_factory):
  """Final params of an uninterrupted run: main.py's training, in this process
  (the same 4 devices and XLA flags as the main.py runs below)."""
  from configs import tiny  # noqa: PLC0415

  workdir = str(tmp_path_factory.mktemp('reference'))
  config = tiny.get_config()
  config.update(data_dir=tfds_dir, num_train_steps=STEPS, **two_processes.TINY_RUN)
  train.train_and_evaluate(config, workdir)
  step, params = final_params(workdir, config)
  assert step == STEPS
  return config, params


def test_sigkill_then_relaunch_is_bitwise_equal(reference, tfds_dir, tmp_path):
  config, expected = reference
  workdir = str(tmp_path)
  env = dict(os.environ, XLA_FLAGS=two_processes.xla_flags(4))
  process = subprocess.Popen(
    main_command(workdir, tfds_dir),
    cwd=REPO,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  first = os.path.join(workdir, 'checkpoints', '2')
  deadline = time.time() + 240
  while not os.path.isdir(first) and time.time() < deadline and process.poll() is None:
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL, 'the run ended before it was killed'
  killed_at = checkpointing.create_manager(workdir).latest_step()
  assert killed_at is not None and killed_at < STEPS

  result = run(main_command(workdir, tfds_dir))
  assert result.returncode == 0, result.stderr[-2000:]
  assert f'Resumed from the checkpoint at step {killed_at}' in result.stderr
  step, params = final_params(workdir, config)
  assert step == STEPS
  assert_same_params(params, expected)


def test_sigterm_saves_exits_zero_and_resumes(tiny_config, tfds_dir, tmp_path, caplog):
  workdir = str(tmp_path)
  command = main_command(workdir, tfds_dir, '--config.num_train_steps=100000')
  env = dict(os.environ, XLA_FLAGS=two_processes.xla_flags(4))
  process = subprocess.Popen(
    command,
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL,
    text=True,
  )
  first = os.path.join(workdir, 'checkpoints', '2')
  deadline = time.time() + 240
  while not os.path.isdir(first) and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  stdout, _ = process.communicate(timeout=120)
  assert process.returncode == 0
  assert 'Preempted: checkpoint saved at step' in stdout
  saved = int(stdout.split('saved at step ')[1].split()[0])
  assert checkpointing.create_manager(workdir).latest_step() == saved >= 2

  # The relaunch, in this process (a relaunched main.py is tested above).
  tiny_config.num_train_steps = saved + 1
  with caplog.at_level(pylogging.INFO):
    assert train.train_and_evaluate(tiny_config, workdir)['step'] == saved + 1
  assert f'Resumed from the checkpoint at step {saved}' in caplog.text


def test_crash_while_writing_keeps_previous_checkpoint(tiny_config, tmp_path):
  workdir = str(tmp_path)
  tiny_config.num_train_steps = 2
  tiny_config.checkpoint_every_steps = 2
  train.train_and_evaluate(tiny_config, workdir)
  crash = textwrap.dedent(f"""
    import os
    import numpy as np
    from sharp_unet_jax.training import checkpointing
    # Keeping one checkpoint: Orbax may delete step 2 only once 3 is complete.
    manager = checkpointing.create_manager({workdir!r}, max_to_keep=1)
    big = {{'x': np.random.default_rng(0).normal(size=(4000, 4000)).astype('float32')}}
    checkpointing.save(manager, 3, big)
    os._exit(1)  # dies while the asynchronous write is in flight
  """)
  result = run([sys.executable, '-c', crash])
  assert result.returncode == 1
  manager = checkpointing.create_manager(workdir)
  assert manager.latest_step() == 2
  tiny_config.num_train_steps = 3
  results = train.train_and_evaluate(tiny_config, workdir)  # resumes from 2
  assert results['step'] == 3


def test_nonfinite_loss_names_the_step_and_saves_nothing(tiny_config, tmp_path):
  tiny_config.learning_rate = 1e30
  tiny_config.log_every_steps = 1
  with pytest.raises(train.NonFiniteLossError, match=r'NaN or infinite at step \d+'):
    train.train_and_evaluate(tiny_config, str(tmp_path))
  latest = checkpointing.create_manager(str(tmp_path)).latest_step()
  assert latest is None
