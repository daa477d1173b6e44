"""Multi-process runs go through a small parent, so a runtime abort ends in one line.

When JAX's distributed runtime loses its coordinator, or finds a peer dead
before this project's monitor does, it aborts the process from a C++ thread
(status 134 and a page of traces); Python cannot catch that. So a program
launched with the distributed flags runs itself again as a child:

* the child sends JAX's C-level stderr (the runtime's traces) to
  WORKDIR/logs/runtime-<process>.log, and keeps Python's log on the terminal;
* it reports its process index, step and checkpoint folder to the parent
  through a pipe;
* the parent forwards SIGTERM, and the child dies with the parent (Linux);
* if the child dies of a signal or aborts, the parent prints the one
  `error:` line (which process, why, the last complete checkpoint, what to
  do) and exits with `failures.EXIT_HOST_FAILURE`. Any other status passes
  through.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Optional

from sharp_unet_jax.training import failures

CHILD_ENV = failures.CHILD_ENV
LOG_ENV = 'SHARP_UNET_JAX_RUNTIME_LOG'
PIPE_ENV = failures.PIPE_ENV
_PASSED_THROUGH = (0, 1, 2, failures.EXIT_HOST_FAILURE)


def is_child() -> bool:
  return failures.is_supervised_child()


def log_path(workdir: Optional[str], process_id: Optional[int]) -> str:
  """WORKDIR/logs/runtime-<process>.log (a temporary folder for a bucket)."""
  name = f'runtime-{"x" if process_id is None else process_id}-{os.getpid()}.log'
  if workdir and '://' not in workdir:
    folder = os.path.join(os.path.abspath(workdir), 'logs')
  else:
    folder = os.path.join(tempfile.gettempdir(), 'sharp_unet_jax_logs')
  os.makedirs(folder, exist_ok=True)
  return os.path.join(folder, name)


def _die_with_parent() -> None:
  """In the child, before exec: SIGKILL when the parent goes (Linux only)."""
  try:
    import ctypes  # noqa: PLC0415

    ctypes.CDLL('libc.so.6', use_errno=True).prctl(
      1, signal.SIGKILL
    )  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


class _Progress:
  """What the child reported: process, count, step, checkpoint folder."""

  def __init__(self, fd: int):
    self.fields: dict[str, str] = {}
    self._file = os.fdopen(fd, 'r')
    threading.Thread(target=self._read, daemon=True, name='child-progress').start()

  def _read(self) -> None:
    for line in self._file:
      key, _, value = line.rstrip('\n').partition(' ')
      self.fields[key] = value


def run_child(workdir: Optional[str], process_id: Optional[int]) -> int:
  """Runs this command line again as a supervised child; returns the exit status."""
  read_fd, write_fd = os.pipe()
  log = log_path(workdir, process_id)
  env = dict(os.environ, **{CHILD_ENV: '1', LOG_ENV: log, PIPE_ENV: str(write_fd)})
  child = subprocess.Popen(
    [sys.executable, *sys.orig_argv[1:]],
    env=env,
    pass_fds=(write_fd,),
    preexec_fn=_die_with_parent,
  )
  os.close(write_fd)
  progress = _Progress(read_fd)
  previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal signals the child too
  try:
    status = child.wait()
  finally:
    signal.signal(signal.SIGTERM, previous)
  if status in _PASSED_THROUGH:
    return status
  if status in (-signal.SIGINT, -signal.SIGTERM):
    return 128 - status  # 130, 143: the user's or the scheduler's stop
  _report_abort(status, log, progress.fields, process_id)
  return failures.EXIT_HOST_FAILURE


def _report_abort(status: int, log: str, fields: dict, process_id) -> None:
  """Prints the one line for a child ended by the runtime or a signal."""
  index = int(fields.get('process', process_id if process_id is not None else -1))
  failures.context.process_index = index
  failures.context.process_count = int(fields.get('count', 0))
  failures.context.step = int(fields['step']) if 'step' in fields else None
  failures.context.checkpoint_dir = fields.get('checkpoints')
  reason = _runtime_reason(log, status)
  print(
    f'error: {reason}{failures.where()}. {failures.last_checkpoint_sentence()} '
    f"{failures.relaunch()} (The runtime's messages are in {log}.)",
    file=sys.stderr,
  )


def _runtime_reason(log: str, status: int) -> str:
  """Why the runtime ended the child, from the last lines of its log."""
  try:
    with open(log, errors='replace') as f:
      text = f.read()[-20000:]
  except OSError:
    text = ''
  me = failures.process_name(failures.context.process_index)
  unhealthy = re.search(r'stopped sending heartbeats\):\s*([\d\s,]+)', text)
  if unhealthy:
    peers = ', '.join(unhealthy.group(1).split())
    return f'{failures.process_name(int(peers.split(",")[0]))} stopped responding'
  if 'coordination service' in text and ('leader' in text or 'Socket closed' in text):
    return f'{failures.process_name(0)} (the coordinator) stopped responding'
  how = f'signal {signal.Signals(-status).name}' if status < 0 else f'status {status}'
  return f'{me} was ended by {how}'


def redirect_runtime_stderr() -> None:
  """In a supervised child: C-level stderr to the log, Python's to the terminal."""
  log = os.environ.get(LOG_ENV)
  if not log or not is_child():
    return
  from absl import logging  # noqa: PLC0415

  terminal = os.fdopen(os.dup(2), 'w', buffering=1)
  log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  os.dup2(log_fd, 2)
  os.close(log_fd)
  sys.stderr = terminal
  handler = logging.get_absl_handler().python_handler
  handler.setStream(terminal)
