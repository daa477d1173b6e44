"""The parts behind the host-failure behaviour, one at a time, in process.

The whole behaviour, with real processes killed and hung, is in
host_failure_test.py; here each rule is checked on its own: the peer
monitor's verdicts, the watchdog's timeout rule and its stacks file, the
supervisor's reading of the runtime's log, damaged checkpoints, and the save
clock.
"""

import glob
import logging as pylogging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sharp_unet_jax.compilation import kv_store
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.training import (
  checkpointing,
  failures,
  liveness,
  supervisor,
  train,
  watchdog,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def three_processes(monkeypatch):
  monkeypatch.setattr(failures, 'context', failures.Context(1, 3, step=40))
  return liveness.PeerMonitor(timeout=10, interval=1)


def test_monitor_blames_the_silent_peer(three_processes):
  monitor = three_processes
  now = monitor._last_tick + 1
  monitor._last_answer = now
  monitor._last_seen = {0: now, 2: now - 11}
  verdict = monitor.verdict(now)
  assert verdict.startswith('process 2 of 3 stopped responding at step 40')
  assert '(no heartbeat for 10 s)' in verdict and failures.relaunch() in verdict


def test_monitor_quiet_while_every_peer_beats(three_processes):
  monitor = three_processes
  now = monitor._last_tick + 1
  monitor._last_answer = now
  monitor._last_seen = {0: now - 9, 2: now - 2}
  assert monitor.verdict(now) is None


def test_monitor_blames_a_silent_coordinator(three_processes):
  monitor = three_processes
  now = monitor._last_tick + 1
  monitor._last_answer = now - 12
  monitor._last_seen = {0: now - 12, 2: now - 12}
  assert 'process 0 of 3 (the coordinator) stopped responding' in monitor.verdict(now)


def test_monitor_repeats_a_peers_announced_failure(three_processes):
  monitor = three_processes
  now = monitor._last_tick + 1
  monitor._last_answer = now
  monitor._announced = {2: 'process 2 of 3 hung in its input at step 39'}
  verdict = monitor.verdict(now)
  assert verdict.startswith('process 2 of 3 failed, so process 1 of 3 stopped')
  assert verdict.endswith('It said: process 2 of 3 hung in its input at step 39')


def test_monitor_knows_it_was_paused_itself(three_processes):
  monitor = three_processes
  verdict = monitor.verdict(monitor._last_tick + 30)
  assert verdict.startswith('process 1 of 3 was paused for 30 s (stopped or frozen)')


class FakeStore:
  """The runtime's key-value calls the monitor makes, each taking `delay` s."""

  def __init__(self, delay=0.05):
    self.values, self.delay = {}, delay

  def key_value_set(self, key, value, allow_overwrite=False):
    time.sleep(self.delay)
    self.values[key] = value

  def key_value_dir_get(self, prefix):
    time.sleep(self.delay)
    return [(k, v) for k, v in self.values.items() if k.startswith(prefix)]


def test_monitor_stops_its_threads_and_says_it_finished(three_processes, monkeypatch):
  """No monitor thread may be inside a runtime call when Python exits (that
  aborts a run that went well), and peers must not blame a finished process."""
  store = FakeStore()
  monkeypatch.setattr(kv_store, 'client', lambda: store)
  monitor = three_processes
  monitor.interval = 0.1
  monitor.start()
  time.sleep(0.3)
  assert monitor.stop()
  assert not any(t.is_alive() for t in threading.enumerate() if t.name == 'heartbeat')
  assert store.values['sharp_unet_jax/heartbeat/1'].endswith(' 40 finished')
  now = monitor._last_tick + 1
  monitor._last_answer = now
  monitor._last_seen = {0: now, 2: now - 11}
  monitor.peer_states[2] = ('40', liveness.FINISHED)
  assert monitor.verdict(now) is None


def test_barriers_wait_on_the_coordination_service_with_an_id_per_passing(
  monkeypatch,
):
  waits = []

  class Client:
    def wait_at_barrier(self, barrier_id, timeout_in_ms):
      waits.append((barrier_id, timeout_in_ms))

  monkeypatch.setattr(kv_store, '_barriers_passed', {})
  monkeypatch.setattr(kv_store, 'client', lambda: None)
  kv_store.barrier('built')  # one process: no runtime, nothing to wait for
  monkeypatch.setattr(kv_store, 'client', Client)
  for name in ('built', 'moved', 'built'):
    kv_store.barrier(name, timeout_s=60)
  assert waits == [
    ('sharp_unet_jax/built/0', 60000),
    ('sharp_unet_jax/moved/0', 60000),
    ('sharp_unet_jax/built/1', 60000),
  ]


def test_runtime_gets_a_later_timeout_than_the_monitor():
  for timeout in (1, 10, 60, 600):
    assert liveness.runtime_heartbeat_timeout(timeout) >= 2 * timeout + 30


def test_step_timeout_flag_values():
  assert watchdog.parse_timeout('auto') is None
  assert watchdog.parse_timeout('OFF') == watchdog.OFF
  assert watchdog.parse_timeout('90') == 90.0
  for bad in ('0', '-3', 'soon'):
    with pytest.raises(UserError, match='--step_timeout'):
      watchdog.parse_timeout(bad)


def test_auto_timeout_is_the_larger_of_floor_and_ten_median_steps(tmp_path):
  dog = watchdog.Watchdog(str(tmp_path), floor=300, factor=10, warmup=2)
  assert dog.timeout() == 300
  dog._step_times.extend([20.0, 50.0, 40.0])
  assert dog.timeout() == 400  # 10 x the median, 40 s
  assert watchdog.Watchdog(str(tmp_path), timeout=7).timeout() == 7


def test_watchdog_times_nothing_before_warmup(tmp_path):
  dog = watchdog.Watchdog(str(tmp_path), timeout=1, warmup=2)
  dog.step_done(1)
  assert not dog._armed()  # compilation: the first steps are not timed
  dog.step_done(2)
  assert dog._armed()
  with dog.phase('evaluation'):
    assert not dog._armed()  # the first evaluation compiles its step
  with dog.phase('evaluation'):
    assert dog._armed()


def test_watchdog_writes_stacks_and_exits_75(tmp_path):
  script = textwrap.dedent(f"""
    import time
    from sharp_unet_jax.training import watchdog

    def stuck_in_the_data_reader():
      time.sleep(60)

    dog = watchdog.start({str(tmp_path)!r}, timeout=1.0)
    for step in (1, 2, 3):
      watchdog.step_done(step)
    stuck_in_the_data_reader()
  """)
  result = subprocess.run(
    [sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True, timeout=60
  )
  assert result.returncode == failures.EXIT_HOST_FAILURE
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: the process hung in its train step at step 3')
  assert last.endswith('Relaunch the same command to resume.')
  stacks = open(tmp_path / 'hang-0.txt').read()
  assert 'stuck_in_the_data_reader' in stacks and 'hang-watchdog' not in last


@pytest.mark.parametrize(
  'log, expected',
  [
    (
      'E1203 coordination_service.cc] UNAVAILABLE: The following tasks are '
      'unhealthy (stopped sending heartbeats):\n1\nThe tasks have crashed.',
      'process 1 of 2 stopped responding',
    ),
    (
      'F1203 client.h:80] Terminating process because the JAX distributed service '
      'detected fatal errors. Failed to send RPC to coordination service. Either the '
      'leader task was preempted/died',
      'process 0 of 2 (the coordinator) stopped responding',
    ),
    ('', 'process 1 of 2 was ended by signal SIGABRT'),
  ],
)
def test_supervisor_reads_why_the_runtime_ended_the_child(
  tmp_path, monkeypatch, log, expected
):
  monkeypatch.setattr(failures, 'context', failures.Context(1, 2))
  path = tmp_path / 'runtime.log'
  path.write_text(log)
  assert supervisor._runtime_reason(str(path), -6) == expected


def train_to(config, workdir, steps):
  config.num_train_steps = steps
  return train.train_and_evaluate(config, workdir)


def damage_arrays(step_dir):
  for path in glob.glob(
    os.path.join(step_dir, 'default', '**', 'd', '*'), recursive=True
  ):
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)


def damage_metadata(step_dir):
  with open(os.path.join(step_dir, 'default', '_METADATA'), 'w') as f:
    f.write('{"tree_metadata": ')


@pytest.fixture(scope='module')
def trained_to_6(tfds_dir, tmp_path_factory):
  """A workdir trained 6 steps with checkpoints at 3 and 6 (copy before use)."""
  from configs import tiny  # noqa: PLC0415

  config = tiny.get_config()
  config.data_dir, config.checkpoint_every_steps = tfds_dir, 3
  workdir = str(tmp_path_factory.mktemp('trained_to_6'))
  train_to(config, workdir, 6)
  return workdir


def copy_of(trained, tmp_path):
  workdir = str(tmp_path / 'work')
  shutil.copytree(trained, workdir)
  return workdir


@pytest.mark.parametrize('damage', [damage_arrays, damage_metadata])
def test_damaged_newest_checkpoint_is_skipped_and_kept(
  trained_to_6, tiny_config, tmp_path, caplog, damage
):
  workdir = copy_of(trained_to_6, tmp_path)
  tiny_config.checkpoint_every_steps = 3
  checkpoints = os.path.join(workdir, 'checkpoints')
  damage(os.path.join(checkpoints, '6'))
  with caplog.at_level(pylogging.INFO):
    results = train_to(tiny_config, workdir, 9)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == pylogging.WARNING]
  skipped = [w for w in warnings if w.startswith('Skipping the damaged checkpoint')]
  assert len(skipped) == 1, warnings
  assert skipped[0].startswith(
    f'Skipping the damaged checkpoint at step 6 in {checkpoints}'
  )
  assert 'Resumed from the checkpoint at step 3.' in caplog.text
  assert results['step'] == 9
  # The damaged one is kept aside, not deleted; 6 and 9 are saved anew.
  assert sorted(os.listdir(checkpoints)) == ['3', '6', '6.damaged', '9']


def test_no_readable_checkpoint_is_one_error(trained_to_6, tiny_config, tmp_path):
  workdir = copy_of(trained_to_6, tmp_path)
  for step in ('3', '6'):
    damage_metadata(os.path.join(workdir, 'checkpoints', step))
  with pytest.raises(
    UserError, match=r'No checkpoint in .* reads back \(steps \[6, 3\]'
  ):
    train_to(tiny_config, workdir, 9)


def test_save_clock_is_due_after_its_seconds(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(checkpointing.SaveClock, 'clock', staticmethod(lambda: now[0]))
  clock = checkpointing.SaveClock(30)
  now[0] = 129.0
  assert not clock.due(1)
  now[0] = 130.0
  assert clock.due(2)
  clock.saved()
  now[0] = 159.0
  assert not clock.due(3)
  assert not checkpointing.SaveClock(0).due(4)  # 0: off


def test_checkpoint_every_seconds_saves_between_step_checkpoints(
  tiny_config, tmp_path, monkeypatch
):
  """Each reading of the fake clock is 1 s later; a save is due 1.5 s on.

  Step 1 reads 1 s, step 2 reads 2 s (due: save, then the clock reads 3 s),
  step 4 is due again, and step 6 is the last step.
  """
  ticks = iter(range(1000))
  monkeypatch.setattr(
    checkpointing.SaveClock, 'clock', staticmethod(lambda: float(next(ticks)))
  )
  tiny_config.checkpoint_every_steps = 1000
  tiny_config.checkpoint_every_seconds = 1.5
  tiny_config.max_checkpoints_to_keep = None
  train_to(tiny_config, str(tmp_path), 6)
  saved = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints'))
  assert saved == [2, 4, 6]
