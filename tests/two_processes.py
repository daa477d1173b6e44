"""Launches a command as two JAX processes on this host (gloo over localhost)."""

import glob
import os
import re
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def xla_flags(devices: int) -> str:
  """The session's XLA_FLAGS (conftest.py) with `devices` CPU devices."""
  flags = re.sub(
    r'--xla_force_host_platform_device_count=\d+', '', os.environ.get('XLA_FLAGS', '')
  )
  return f'{flags.strip()} --xla_force_host_platform_device_count={devices}'


# What tiny_main_command overrides in configs/tiny.py, besides the data dir and
# the number of steps (for runs in the test's own process to match).
TINY_RUN = {'checkpoint_every_steps': 2, 'eval_every_steps': 4}


def tiny_main_command(workdir, data_dir, steps, *extra):
  """`main.py` on configs/tiny.py with TINY_RUN's checkpoints and evaluations."""
  return [
    sys.executable,
    'main.py',
    '--config=configs/tiny.py',
    f'--workdir={workdir}',
    f'--config.data_dir={data_dir}',
    f'--config.num_train_steps={steps}',
    *(f'--config.{key}={value}' for key, value in TINY_RUN.items()),
    *extra,
  ]


def start_two_processes(command, devices=2, env=None):
  """Starts `command` + the distributed flags as processes 0 and 1.

  Each process leads a session of its own, like a host: `signal_host` reaches
  it and the training child it supervises.
  """
  port = free_port()
  env = dict(
    os.environ,
    XLA_FLAGS=xla_flags(devices),
    **(env or {}),
  )
  return [
    subprocess.Popen(
      [
        *command,
        f'--coordinator_address=localhost:{port}',
        '--num_processes=2',
        f'--process_id={i}',
      ],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      start_new_session=True,
    )
    for i in range(2)
  ]


def signal_host(process: subprocess.Popen, signum: int) -> None:
  """Sends `signum` to every process of `process`'s session (a whole 'host')."""
  os.killpg(os.getpgid(process.pid), signum)


def run_two_processes(command, devices=2, timeout=300):
  """Runs `command` + the distributed flags as processes 0 and 1.

  Returns:
    [(stdout, stderr)] of each process, after asserting both exited with 0.
  """
  processes = start_two_processes(command, devices)
  try:
    outputs = [p.communicate(timeout=timeout) for p in processes]
  except subprocess.TimeoutExpired:
    raise AssertionError(where_they_hung(processes, command, timeout)) from None
  for i, (p, (_, err)) in enumerate(zip(processes, outputs)):
    assert p.returncode == 0, f'process {i} exited {p.returncode}: ' + last_lines(err)
  return outputs


def where_they_hung(processes, command, timeout) -> str:
  """Ends processes still running after `timeout` with SIGABRT, so that
  faulthandler (absl's app.run enables it) writes every Python thread's stack:
  the parent's to its stderr, the supervised child's to its runtime log in
  WORKDIR/logs. Returns those stacks and each process's last lines."""
  hung = [i for i, p in enumerate(processes) if p.poll() is None]
  # The children first: a parent's end kills its child at once (PDEATHSIG).
  for i in hung:
    for pid in session_members(processes[i].pid):
      signal_quietly(pid, signal.SIGABRT)
  time.sleep(5)
  for i in hung:
    signal_quietly(processes[i].pid, signal.SIGABRT)
  try:
    outputs = [p.communicate(timeout=30) for p in processes]
  except subprocess.TimeoutExpired:
    kill_all(processes)
    outputs = [p.communicate() for p in processes]
  report = [f'process(es) {hung} still running after {timeout} s.']
  for i, (_, err) in enumerate(outputs):
    report.append(f'--- process {i} (status {processes[i].returncode}) stderr:')
    report.append(err[-6000:])
  workdir = next(
    (a.split('=', 1)[1] for a in command if a.startswith('--workdir=')), ''
  )
  for log in sorted(glob.glob(os.path.join(workdir, 'logs', 'runtime-*.log'))):
    with open(log, errors='replace') as f:
      report.append(f'--- {log}:\n' + f.read()[-8000:])
  return '\n'.join(report)


def session_members(leader: int) -> list[int]:
  """The processes of `leader`'s session, except the leader (Linux's /proc)."""
  members = []
  for stat in glob.glob('/proc/[0-9]*/stat'):
    try:
      with open(stat) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
      continue
    pid = int(stat.split('/')[2])
    if int(fields[3]) == leader and pid != leader:  # fields[3]: the session id
      members.append(pid)
  return members


def signal_quietly(pid: int, signum: int) -> None:
  try:
    os.kill(pid, signum)
  except ProcessLookupError:
    pass


def last_lines(stderr: str, count: int = 15) -> str:
  """The last lines of a run's stderr, without the CUDA plugin's start-up noise."""
  noise = ('cudart_stub', 'absl::InitializeLog')
  lines = [line for line in stderr.splitlines() if not any(n in line for n in noise)]
  return ' | '.join(lines[-count:])


def kill_all(processes) -> None:
  """Cleans up after a failed test: no process outlives it."""
  for p in processes:
    if p.poll() is None:
      try:
        signal_host(p, signal.SIGKILL)
      except ProcessLookupError:
        pass
