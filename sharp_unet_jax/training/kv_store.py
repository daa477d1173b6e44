"""The key-value store of JAX's distributed runtime, with deadlines.

The runtime's client calls have no deadline of their own: one to a stopped
coordinator would block for good, so the callers that must not hang go
through `try_with_timeout`.
"""

import threading
from typing import Callable


def client():
  """The distributed runtime's client (None when JAX runs as one process)."""
  from jax._src import distributed  # noqa: PLC0415  (no public accessor)

  return distributed.global_state.client


def try_with_timeout(call: Callable, timeout: float):
  """`call(client())` in a helper thread; its result, or None after `timeout`."""
  result = []

  def target():
    try:
      result.append(call(client()))
    except Exception:  # noqa: BLE001  (an unreachable peer: no answer)
      pass

  thread = threading.Thread(target=target, daemon=True, name='kv-call')
  thread.start()
  thread.join(timeout)
  return result[0] if result else None
