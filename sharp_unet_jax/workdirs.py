"""The folders programs write to: created and checked once, JSON written whole.

Training, evaluation, experiments and conversions all write here, so none of
them has to import another to do it.
"""

import json
import os
import tempfile
from typing import Any, Optional

from sharp_unet_jax.errors import UserError


def prepare(workdir: Optional[str]) -> str:
  """Creates `workdir` if needed and checks it is writable; returns its path.

  Args:
    workdir: the folder for checkpoints, logs and reports.

  Returns:
    The absolute path of the folder.

  Raises:
    UserError: if the directory cannot be created or written.
  """
  if not workdir:
    raise UserError('--workdir is required: the folder for checkpoints and logs.')
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise UserError(
      f'--workdir={workdir} is not a writable folder: {e.strerror}.'
    ) from e
  return workdir


def write_json_atomically(path: str, payload: Any) -> None:
  """Writes JSON through a temporary file, so `path` is never half-written.

  Args:
    path: the file to write.
    payload: anything `json.dump` takes; keys are sorted.
  """
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)
