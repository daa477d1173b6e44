"""Thin helpers around an Orbax CheckpointManager for the train state.

Checkpoints live in WORKDIR/checkpoints/<step>. Orbax writes each one to a
temporary folder and renames it when complete, so a crash mid-write leaves the
previous checkpoints intact. Only arrays are stored (no pickles); the constant
Sharp block kernel is not part of the state and is never stored.

Every checkpoint is written and read with the one Orbax handler of this
module (StandardCheckpointHandler): training saves and resumes the whole
state, and the programs that only predict read its parameters.
"""

import os
import time
from typing import Any, Optional

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from sharp_unet_jax.compilation import kv_store
from sharp_unet_jax.errors import UserError

BEST = 'checkpoints_best'
DAMAGED_SUFFIX = '.damaged'


class CheckpointMismatchError(UserError):
  """A readable checkpoint written by another model config."""


def checkpoint_dir(workdir: str, name: str = 'checkpoints') -> str:
  """Absolute path of WORKDIR/<name>, the folder of one CheckpointManager."""
  return os.path.join(os.path.abspath(workdir), name)


def _open(directory: str, create: bool, **options) -> ocp.CheckpointManager:
  """A CheckpointManager of `directory` with this module's one handler."""
  return ocp.CheckpointManager(
    directory,
    options=ocp.CheckpointManagerOptions(create=create, **options),
    item_handlers=ocp.StandardCheckpointHandler(),
  )


def create_manager(
  workdir: str,
  max_to_keep: Optional[int] = 3,
  save_interval_steps: int = 1,
  name: str = 'checkpoints',
) -> ocp.CheckpointManager:
  """Returns a CheckpointManager writing to WORKDIR/<name> (the latest ones).

  name=BEST ('checkpoints_best') holds the best-scoring state instead.
  """
  return _open(
    checkpoint_dir(workdir, name),
    create=True,
    max_to_keep=max_to_keep,
    save_interval_steps=save_interval_steps,
  )


def _key_name(key) -> str:
  for attribute in ('key', 'name', 'idx'):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _shapes_by_path(tree) -> dict[str, tuple]:
  """Maps 'a/b/0/c' paths (dict keys, attributes and indices alike) to shapes."""
  return {
    '/'.join(_key_name(k) for k in path): tuple(np.shape(leaf))
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    if leaf is not None
  }


def _shape_mismatches(saved_metadata, target) -> list[str]:
  """Lists 'path: saved shape vs expected shape' for every differing leaf."""
  saved = _shapes_by_path(saved_metadata)
  expected = _shapes_by_path(target)
  return [
    f'{key}: saved {saved.get(key)} vs expected {expected.get(key)}'
    for key in sorted(set(saved) | set(expected))
    if saved.get(key) != expected.get(key)
  ]


def restore(
  manager: ocp.CheckpointManager, abstract_state: Any, step: Optional[int] = None
):
  """Restores `step` (default: the latest) into the structure of `abstract_state`.

  `abstract_state` is a pytree of jax.ShapeDtypeStruct (with shardings) or
  arrays. The saved shapes are checked against it first, so a checkpoint of
  another model config fails with a clear message instead of loading
  mismatched arrays.

  Raises:
    UserError: if there is no checkpoint, or it does not match the state.
  """
  directory = str(manager.directory)
  if step is None:
    step = manager.latest_step()
  if step is None or step not in manager.all_steps():
    raise UserError(
      f'No checkpoint{"" if step is None else f" at step {step}"} in {directory}.'
    )
  metadata = manager.item_metadata(step)
  problems = _shape_mismatches(metadata, abstract_state) if metadata else []
  if problems:
    raise CheckpointMismatchError(
      f'The checkpoint in {directory} (step {step}) was written by a different '
      f'model config ({len(problems)} mismatched arrays, e.g. {problems[0]}); '
      'use the config that wrote it or a new --workdir.'
    )
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
  except (ValueError, KeyError, TypeError, OSError) as e:
    raise UserError(
      f'Cannot restore the checkpoint in {directory} (step {step}): '
      f'{str(e).splitlines()[0]}; use the config that wrote it or a new --workdir.'
    ) from e


def restore_newest_intact(manager: ocp.CheckpointManager, abstract_state: Any):
  """Restores the newest checkpoint that reads back whole; None if there is none.

  A checkpoint with a missing or damaged array file or metadata (a write cut
  short, a truncated copy, a bad disk) is skipped with one warning naming it,
  and moved aside to `<step>.damaged` (by process 0), so that training can
  save that step again and nothing is deleted. A readable checkpoint of
  another model config is still an error.

  Raises:
    CheckpointMismatchError: the newest readable checkpoint is of another config.
    UserError: no checkpoint reads back, though some exist.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  damaged = []
  for step in steps:
    try:
      state = restore(manager, abstract_state, step)
    except CheckpointMismatchError:
      raise
    except Exception as e:  # noqa: BLE001  (any read failure: damaged)
      cause = e.__cause__ or e  # the read error under a UserError's advice
      reason = (str(cause).splitlines() or [type(cause).__name__])[0]
      logging.warning(
        'Skipping the damaged checkpoint at step %d in %s (%s); it is moved to '
        '%d%s and the run resumes from an older one.',
        step,
        manager.directory,
        reason[:300],
        step,
        DAMAGED_SUFFIX,
      )
      damaged.append(step)
      continue
    _move_aside(manager, damaged)
    return state
  if damaged:
    raise UserError(
      f'No checkpoint in {manager.directory} reads back (steps {damaged} are '
      'damaged); move them away to start afresh, or restore a copy.'
    )
  return None


def _move_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  """Renames damaged step folders to `<step>.damaged` (process 0), then syncs."""
  if not steps:
    return
  if jax.process_index() == 0:
    for step in steps:
      path = os.path.join(str(manager.directory), str(step))
      os.replace(path, path + DAMAGED_SUFFIX)
  kv_store.barrier('damaged_checkpoints_moved')
  manager.reload()


def read_only_manager(directory: str) -> ocp.CheckpointManager:
  """A manager that reads the checkpoints of `directory` and creates nothing."""
  return _open(directory, create=False)


def restore_params(directory: str, step: int, target) -> Any:
  """Reads the 'params' subtree of a checkpoint as numpy arrays.

  The programs that only predict (evaluate, predict, export) read this way:
  the parameters come back, nothing is put on a device.

  Args:
    directory: a CheckpointManager folder (e.g. WORKDIR/checkpoints).
    step: the step to read.
    target: the expected parameter tree (arrays or jax.ShapeDtypeStruct).

  Raises:
    UserError: if the checkpoint holds no parameters of the expected shapes.
  """
  manager = read_only_manager(directory)
  where = f'{directory} (step {step})'
  try:
    metadata = manager.item_metadata(step)
    metadata = getattr(metadata, 'tree', metadata)
  except (OSError, ValueError, KeyError) as e:
    raise UserError(f'Cannot read the checkpoint in {where}: {e}.') from e
  if not metadata or 'params' not in metadata:
    raise UserError(f'The checkpoint in {where} holds no model parameters.')
  problems = _shape_mismatches(metadata['params'], target)
  if problems:
    raise UserError(
      f'The checkpoint in {where} does not fit the model of config.json '
      f'({len(problems)} mismatched arrays, e.g. {problems[0]}).'
    )
  # The whole saved tree is read, into numpy arrays of its own shapes (a
  # target without shardings puts nothing on a device); the shapes of the
  # parameters were checked above.
  item = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), metadata)
  try:
    restored = manager.restore(step, args=ocp.args.StandardRestore(item))
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(
      f'Cannot restore the checkpoint in {where}: {str(e).splitlines()[0]}.'
    ) from e
  return restored['params']


def save(
  manager: ocp.CheckpointManager, step: int, state: Any, force: bool = False
) -> bool:
  """Saves `state` at `step` (asynchronously); returns whether it saved."""
  saved = manager.save(step, args=ocp.args.StandardSave(state), force=force)
  if saved:
    logging.info('Saving checkpoint at step %d to %s', step, manager.directory)
  return saved


class SaveClock:
  """Says when a checkpoint is due by time (config.checkpoint_every_seconds).

  So that a hard failure loses at most that much work, whatever the step
  count. Every process must save at the same step: process 0's clock decides,
  and the others read its decision for each step from JAX's key-value store.
  """

  _KEY = 'sharp_unet_jax/checkpoint_due/'
  clock = staticmethod(time.monotonic)

  def __init__(self, every_seconds: Optional[float]):
    self.every_seconds = every_seconds or None
    self._last = self.clock()

  def due(self, step: int) -> bool:
    if self.every_seconds is None:
      return False
    local = self.clock() - self._last >= self.every_seconds
    if jax.process_count() == 1:
      return local
    client, key = kv_store.client(), f'{self._KEY}{step}'
    if jax.process_index() == 0:
      client.key_value_set(key, str(int(local)))
      return local
    # No deadline of its own: the hang watchdog and the peer monitor end a
    # process that waits here for a lost process 0.
    return client.blocking_key_value_get(key, 24 * 3600 * 1000) == '1'

  def saved(self) -> None:
    self._last = self.clock()
