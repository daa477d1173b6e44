"""Launches a command as two JAX processes on this host (gloo over localhost)."""

import os
import re
import signal
import socket
import subprocess
import sys

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
  outputs = [p.communicate(timeout=timeout) for p in processes]
  for i, (p, (_, err)) in enumerate(zip(processes, outputs)):
    assert p.returncode == 0, f'process {i} exited {p.returncode}: ' + last_lines(err)
  return outputs


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
