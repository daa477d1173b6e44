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


_barriers_passed: dict[str, int] = {}


def barrier(name: str, timeout_s: float = 24 * 3600.0) -> None:
  """Returns once every process has reached `name` (at once on one process).

  A barrier of the runtime's coordination service, not a collective: gloo
  gives the processes 30 s to meet at their first collective, less than a
  data set build on process 0 may take. The timeout is long because a lost
  peer is the peer monitor's to report (liveness.py). Every process must
  pass the same barriers in the same order; each passing gets its own id.
  """
  kv = client()
  if kv is None:
    return
  count = _barriers_passed.get(name, 0)
  _barriers_passed[name] = count + 1
  kv.wait_at_barrier(f'sharp_unet_jax/{name}/{count}', int(timeout_s * 1000))
