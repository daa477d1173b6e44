"""A host that dies, stops or hangs: real processes on localhost, tiny config.

Every run is `main.py` as two processes (each in a session of its own, like a
host) or one. Process 1 is made to stall at step 6 by the fault-injection
switch; the tests then kill it, or let the hang watchdog find it, and check
what the user sees: the exit status, the last line, the time it took, and
that the relaunch resumes to the parameters of an uninterrupted run.
"""

import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest
import training_states
import two_processes

from sharp_unet_jax.training import checkpointing, failures, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8
HEARTBEAT_S = 20
STEP_TIMEOUT_S = 15
STALL_PROCESS_1 = {'SHARP_UNET_JAX_STALL': '1:6:input'}


def command(workdir, data_dir, *extra, heartbeat=60):
  """The tiny run; a long heartbeat timeout unless the test measures it."""
  return two_processes.tiny_main_command(
    workdir, data_dir, STEPS, f'--heartbeat_timeout={heartbeat}', *extra
  )


def run_one(cmd, devices=4):
  env = dict(os.environ, XLA_FLAGS=two_processes.xla_flags(devices))
  result = subprocess.run(
    cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, two_processes.last_lines(result.stderr)
  return result


def final_state(workdir, data_dir):
  from configs import tiny  # noqa: PLC0415

  config = tiny.get_config()
  config.data_dir = data_dir
  manager = checkpointing.create_manager(workdir)
  state = checkpointing.restore(manager, train.Trainer(config).initial_state())
  return int(state.step), jax.device_get(state)


def assert_same_training(a, b, atol=0.0):
  """Adam's moments and the parameters: bitwise at atol 0; else the moments
  relative to each leaf's scale (a wrong gradient scale on some layout moves
  them) and the parameters within atol."""
  if atol:
    training_states.assert_moments_close(a.opt_state, b.opt_state)
  else:
    for x, y in zip(
      jax.tree_util.tree_leaves(a.opt_state),
      jax.tree_util.tree_leaves(b.opt_state),
      strict=True,
    ):
      np.testing.assert_array_equal(x, y)
  leaves_a = jax.tree_util.tree_leaves(a.params)
  leaves_b = jax.tree_util.tree_leaves(b.params)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(x, y, atol=atol, rtol=0)


@pytest.fixture(scope='module')
def reference(tfds_dir, tmp_path_factory):
  """Final parameters of an uninterrupted two-process run."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  two_processes.run_two_processes(command(workdir, tfds_dir))
  step, state = final_state(workdir, tfds_dir)
  assert step == STEPS
  return state


def wait_for_checkpoint(workdir, step, processes, limit=240):
  path = os.path.join(workdir, 'checkpoints', str(step))
  deadline = time.monotonic() + limit
  while not os.path.isdir(path):
    assert time.monotonic() < deadline, f'no checkpoint {step} after {limit} s'
    assert all(p.poll() is None for p in processes), 'a process ended early'
    time.sleep(0.1)
  return time.monotonic()


def wait_and_read(process, started, limit):
  """(exit status, seconds since `started`, last stderr line) of `process`."""
  _, err = process.communicate(timeout=limit)
  lines = [line for line in err.splitlines() if line.strip()]
  return process.returncode, time.monotonic() - started, lines[-1], err


def relaunch_and_compare(workdir, data_dir, expected, resumed_from):
  outputs = two_processes.run_two_processes(command(workdir, data_dir))
  assert f'Resumed from the checkpoint at step {resumed_from}' in outputs[0][1]
  step, state = final_state(workdir, data_dir)
  assert step == STEPS
  assert_same_training(state, expected)  # bitwise: the same processes and devices


def kill_host(workdir, data_dir, victim):
  """Kills one host's session while process 1 stalls at step 6 (its watchdog
  far off); returns (status, seconds, last line, stderr) of the other."""
  processes = two_processes.start_two_processes(
    command(workdir, data_dir, '--step_timeout=3600', heartbeat=HEARTBEAT_S),
    env=STALL_PROCESS_1,
  )
  try:
    wait_for_checkpoint(workdir, 4, processes)
    time.sleep(1)
    killed = time.monotonic()
    two_processes.signal_host(processes[victim], signal.SIGKILL)
    return wait_and_read(processes[1 - victim], killed, 180)
  finally:
    two_processes.kill_all(processes)


def test_sigkill_of_one_host_stops_the_other_with_one_line(
  reference, tfds_dir, tmp_path
):
  workdir = str(tmp_path)
  status, seconds, last, err = kill_host(workdir, tfds_dir, victim=1)
  assert status == failures.EXIT_HOST_FAILURE, err[-3000:]
  assert seconds < HEARTBEAT_S + 45
  assert last.startswith('error: process 1 of 2 stopped responding'), last
  assert f'last complete checkpoint is step 4 in {workdir}' in last
  assert 'Relaunch the same command on every host' in last
  assert 'Traceback' not in err and 'Fatal Python error' not in err
  relaunch_and_compare(workdir, tfds_dir, reference, resumed_from=4)


def test_loss_of_the_coordinator_host_is_one_line(tfds_dir, tmp_path):
  """Process 0 hosts JAX's coordination service: its loss aborts the runtime
  of the others at once, which the supervising parent turns into one line."""
  workdir = str(tmp_path)
  status, seconds, last, err = kill_host(workdir, tfds_dir, victim=0)
  assert status == failures.EXIT_HOST_FAILURE, err[-3000:]
  assert seconds < HEARTBEAT_S + 45
  assert last.startswith('error: process 0 of 2 (the coordinator) stopped'), last
  assert f'last complete checkpoint is step 4 in {workdir}' in last
  assert f"runtime's messages are in {workdir}/logs/runtime-1-" in last
  assert 'Fatal Python error' not in err  # it is in the log file, not here


def test_hang_is_caught_both_stop_and_the_relaunch_resumes_on_other_layouts(
  reference, tmp_path
):
  """Process 1 hangs in its input at step 6: both processes stop with one line.
  The user relaunches on one process of 2 devices to step 6 (2 -> 1 process,
  4 -> 2 devices), then on two again to the end (1 -> 2, 2 -> 4 devices). The
  data dir starts empty: process 0 builds it while process 1 waits."""
  workdir, data_dir = str(tmp_path / 'work'), str(tmp_path / 'data')
  processes = two_processes.start_two_processes(
    command(
      workdir, data_dir, f'--step_timeout={STEP_TIMEOUT_S}', heartbeat=HEARTBEAT_S
    ),
    env=STALL_PROCESS_1,
  )
  try:
    started = wait_for_checkpoint(workdir, 4, processes)
    results = [wait_and_read(p, started, 180) for p in processes]
  finally:
    two_processes.kill_all(processes)
  for status, seconds, last, err in results:
    assert status == failures.EXIT_HOST_FAILURE, err[-3000:]
    assert seconds < STEP_TIMEOUT_S + 45
    assert last.startswith('error: process '), last
    assert 'Fatal Python error' not in err
  # Whichever watchdog fires first names process 1; the other process may
  # instead report that process 0 (the coordinator) is gone, if it goes first.
  assert any('process 1 of 2 hung' in last for _, _, last, _ in results), results
  stacks = open(os.path.join(workdir, 'hang-1.txt')).read()
  assert 'stall_if_requested' in stacks and 'Thread' in stacks

  one = run_one(command(workdir, data_dir, '--config.num_train_steps=6'), devices=2)
  assert 'Resumed from the checkpoint at step 4' in one.stderr
  outputs = two_processes.run_two_processes(command(workdir, data_dir))
  assert 'Resumed from the checkpoint at step 6' in outputs[0][1]
  assert 'Test (test' in outputs[0][0] and 'Test (test' not in outputs[1][0]
  step, state = final_state(workdir, data_dir)
  assert step == STEPS
  assert_same_training(state, reference, atol=1e-5)  # summed in another order
