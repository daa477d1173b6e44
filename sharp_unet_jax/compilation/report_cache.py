"""An on-disk cache of compile reports, so that a second plan is quick.

A report (the compiler's memory and cost figures of one program) is stored
as JSON under a key that names everything the program depends on: the
config (with the batch and dtype it was compiled at), the target, the
versions of jax, jaxlib and the compiler plugins, and a digest of this
package's source, so that an edit to the model or the steps never reads a
stale figure back. Files are written whole (a temporary file, renamed).
"""

import functools
import hashlib
import importlib.metadata
import json
import os
import tempfile
from typing import Optional

# Packages whose version changes the compiled program.
_COMPILERS = ('jax', 'jaxlib', 'libtpu', 'jax-cuda12-plugin', 'jax-cuda12-pjrt')
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_dir() -> str:
  """~/.cache/sharp_unet_jax/plan (or under $XDG_CACHE_HOME)."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
  return os.path.join(base, 'sharp_unet_jax', 'plan')


@functools.cache
def versions() -> dict[str, str]:
  """Installed versions of the packages that compile."""
  found = {}
  for name in _COMPILERS:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      continue
  return found


@functools.cache
def source_digest() -> str:
  """sha256 of this package's Python source, file names included."""
  digest = hashlib.sha256()
  for root, dirs, files in os.walk(_PACKAGE_DIR):
    dirs.sort()
    for name in sorted(f for f in files if f.endswith('.py')):
      path = os.path.join(root, name)
      digest.update(os.path.relpath(path, _PACKAGE_DIR).encode())
      with open(path, 'rb') as f:
        digest.update(f.read())
  return digest.hexdigest()


def make_key(**parts) -> dict:
  """The full key: `parts` plus the compiler versions and source digest."""
  return {**parts, 'versions': versions(), 'source': source_digest()}


class ReportCache:
  """JSON reports in a folder, one file per key; a no-op without a folder."""

  def __init__(self, directory: Optional[str]):
    """Args: directory: where the reports live; None or '': no caching."""
    self.directory = directory or None

  def _path(self, key: dict) -> str:
    text = json.dumps(key, sort_keys=True, default=str)
    name = hashlib.sha256(text.encode()).hexdigest()[:32]
    return os.path.join(self.directory, f'{name}.json')

  def get(self, key: dict) -> Optional[dict]:
    """The report stored under `key`, or None (also for an unreadable file)."""
    if self.directory is None:
      return None
    try:
      with open(self._path(key)) as f:
        stored = json.load(f)
    except (OSError, ValueError):
      return None
    same = json.dumps(stored.get('key'), sort_keys=True, default=str) == json.dumps(
      key, sort_keys=True, default=str
    )
    return stored.get('report') if same else None

  def put(self, key: dict, report: dict) -> None:
    """Stores `report` under `key`; a cache that cannot be written is skipped."""
    if self.directory is None:
      return
    try:
      os.makedirs(self.directory, exist_ok=True)
      with tempfile.NamedTemporaryFile(
        'w', dir=self.directory, suffix='.tmp', delete=False
      ) as f:
        json.dump({'key': key, 'report': report}, f, default=str)
      os.replace(f.name, self._path(key))
    except OSError:
      return
