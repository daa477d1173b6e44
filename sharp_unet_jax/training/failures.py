"""What a process does when the job cannot go on: one `error:` line, then exit.

A host that dies, stops or hangs leaves the other processes of a
multi-process job waiting in a collective or a barrier. JAX's runtime notices
in the end, and aborts with a page of C++ traces. Instead, the peer monitor
(`liveness`) and the hang watchdog (`watchdog`) call `fail` here, which

* tells the other processes why, through JAX's key-value store, so that they
  stop too and say which process failed;
* prints one line, last, naming the process, the step and the last complete
  checkpoint, and what to do;
* exits at once with `EXIT_HOST_FAILURE`, without running the interpreter's
  shutdown (which would wait on the failed peer, then abort).

Exit statuses of `main.py`, `evaluate` and `predict`: 0 done (or preempted by
SIGTERM, with a checkpoint saved), 2 bad input, `EXIT_HOST_FAILURE` (75) a
host failed, stopped or hung: relaunch the same command on every host. 75 is
EX_TEMPFAIL of sysexits.h, "try again later".
"""

import dataclasses
import os
import sys
import threading
import time
from typing import Optional

from sharp_unet_jax.compilation import kv_store

EXIT_HOST_FAILURE = 75
ANNOUNCE_GRACE_S = 3.0
_FAILED_KEY = 'sharp_unet_jax/failed/'
# How a supervised child (training.supervisor) knows it, and reports to its parent.
CHILD_ENV = 'SHARP_UNET_JAX_SUPERVISED'
PIPE_ENV = 'SHARP_UNET_JAX_PROGRESS_FD'


@dataclasses.dataclass
class Context:
  """Where this process is, for the failure line. Updated by the train loop."""

  process_index: int = 0
  process_count: int = 1
  step: Optional[int] = None
  phase: str = 'start'
  checkpoint_dir: Optional[str] = None
  workdir: Optional[str] = None


context = Context()
_lock = threading.Lock()


def where() -> str:
  """'at step N' when training, '' otherwise."""
  return '' if context.step is None else f' at step {context.step}'


def last_checkpoint_sentence() -> str:
  """'The last complete checkpoint is step N in DIR.' (or that there is none)."""
  directory = context.checkpoint_dir
  if directory is None:
    return ''
  steps = complete_steps(directory)
  if not steps:
    return f'There is no complete checkpoint in {directory} yet.'
  return f'The last complete checkpoint is step {max(steps)} in {directory}.'


def complete_steps(directory: str) -> list[int]:
  """Steps of the finished checkpoints in `directory`, without asking Orbax.

  Orbax writes a checkpoint into `<step>.orbax-checkpoint-tmp...` and renames
  it to `<step>` once every process has written its part, so a folder named
  by digits alone is complete.
  """
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  return sorted(int(name) for name in names if name.isdigit())


def process_name(index: int) -> str:
  """'process i of n'; 'the process' when it runs alone."""
  if context.process_count == 1:
    return 'the process'
  count = f' of {context.process_count}' if context.process_count else ''
  return f'process {index}{count}'


def relaunch() -> str:
  if context.process_count == 1:
    return 'Relaunch the same command to resume.'
  return 'Relaunch the same command on every host to resume.'


def set_checkpoint_dir(directory: str) -> None:
  """Records where the run's checkpoints go (and tells a supervising parent)."""
  context.checkpoint_dir = directory
  tell_parent('checkpoints', directory)


def set_step(step: int) -> None:
  """Records the train step reached (and tells a supervising parent)."""
  context.step = step
  tell_parent('step', step)


def is_supervised_child() -> bool:
  """Whether this process runs under `supervisor.run_child`."""
  return os.environ.get(CHILD_ENV) == '1'


def tell_parent(key: str, value) -> None:
  """In a supervised child, sends `key value` to the parent (best effort)."""
  fd = os.environ.get(PIPE_ENV)
  if not fd or not is_supervised_child():
    return
  try:
    os.set_blocking(int(fd), False)  # a stopped parent must not block training
    os.write(int(fd), f'{key} {value}\n'.encode())
  except OSError:
    pass


def publish_failure(line: str) -> None:
  """Tells the other processes why this one stops (best effort, 2 s at most)."""
  key = f'{_FAILED_KEY}{context.process_index}'
  kv_store.try_with_timeout(lambda client: client.key_value_set(key, line), 2.0)


def peer_failures(client) -> dict[int, str]:
  """{process: its failure line} of the processes that announced one."""
  return {
    int(key.rsplit('/', 1)[-1]): value
    for key, value in client.key_value_dir_get(_FAILED_KEY)
  }


def is_multiprocess() -> bool:
  return context.process_count > 1


def fail(message: str, announce: bool = True, status: int = EXIT_HOST_FAILURE) -> None:
  """Prints `error: message` as the last line and exits with `status` at once.

  Safe to call from any thread, once: a second caller waits for the exit.
  `announce` also tells the peers, through the key-value store, first.
  """
  if not _lock.acquire(blocking=True, timeout=30):
    return
  line = ' '.join(message.split())
  if announce and is_multiprocess():
    publish_failure(line)
    # Peers read the announcement before this process (maybe the one that
    # hosts JAX's coordination service) is gone.
    time.sleep(ANNOUNCE_GRACE_S)
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  # sys.stderr: in a supervised child, fd 2 goes to the runtime's log file.
  try:
    sys.stderr.write(f'error: {line}\n')
    sys.stderr.flush()
  except (OSError, ValueError):
    os.write(2, f'error: {line}\n'.encode())
  os._exit(status)
