"""Loads a training workdir for inference: its config, model and parameters.

The config comes back from WORKDIR/config.json (written by the first launch
of training); the parameters alone are read from an Orbax checkpoint, as
arrays, without unpickling anything and without the optimiser state.

Checkpoints are chosen by name:
- 'latest': the newest step in WORKDIR/checkpoints;
- 'best': the newest step in WORKDIR/checkpoints_best when that folder
  exists, else the step recorded as {"step": N} in WORKDIR/best.json, read
  from WORKDIR/checkpoints;
- a step number, e.g. '1200': that step in WORKDIR/checkpoints.
"""

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from sharp_unet_jax.errors import UserError
from sharp_unet_jax.model import models
from sharp_unet_jax.training import checkpointing

BEST_DIR = 'checkpoints_best'
BEST_RECORD = 'best.json'
# Config keys the model and the inference code need.
_REQUIRED_KEYS = (
  'model',
  'num_classes',
  'num_filters',
  'depth',
  'kernel_init',
  'dtype',
  'image_size',
  'num_channels',
)


@dataclasses.dataclass(frozen=True)
class Restored:
  """A trained model ready for inference.

  Attributes:
    config: the training config.
    model: the Flax module built from it.
    params: the parameter tree, as numpy arrays.
    step: the training step of the checkpoint.
    checkpoint: the folder of the checkpoint that was read.
  """

  config: ml_collections.ConfigDict
  model: models.UNet
  params: Any
  step: int
  checkpoint: str

  def apply(self, params, images: jax.Array) -> jax.Array:
    """Logits (N, H, W, num_classes) of float images (N, H, W, C)."""
    return self.model.apply({'params': params}, images)


def _tuples(value):
  """JSON lists back to the tuples the config had (recursively)."""
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """Reads WORKDIR/config.json back into a ConfigDict.

  Raises:
    UserError: the workdir or its config.json is missing, unreadable or lacks
      a key the model needs.
  """
  if not os.path.isdir(workdir):
    raise UserError(f'--workdir={workdir} is not a folder; pass a training workdir.')
  path = os.path.join(workdir, 'config.json')
  try:
    with open(path) as f:
      values = json.load(f)
  except FileNotFoundError as e:
    raise UserError(
      f'{path} is missing: --workdir must be a folder written by training '
      '(python main.py --workdir=...).'
    ) from e
  except (OSError, ValueError) as e:
    raise UserError(f'Cannot read {path}: {e}.') from e
  if not isinstance(values, dict):
    raise UserError(f'{path} does not hold a config (a JSON object).')
  missing = [key for key in _REQUIRED_KEYS if key not in values]
  if missing:
    raise UserError(f'{path} lacks the config keys {", ".join(missing)}.')
  config = ml_collections.ConfigDict(_tuples(values))
  config.image_size = tuple(int(side) for side in config.image_size)
  return config


def _manager(directory: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
    directory,
    item_handlers=ocp.PyTreeCheckpointHandler(),
    options=ocp.CheckpointManagerOptions(create=False),
  )


def _recorded_best_step(workdir: str) -> int:
  path = os.path.join(workdir, BEST_RECORD)
  try:
    with open(path) as f:
      return int(json.load(f)['step'])
  except FileNotFoundError as e:
    raise UserError(
      f'--checkpoint=best: {workdir} has no best checkpoint (neither '
      f'{BEST_DIR}/ nor {BEST_RECORD}); use --checkpoint=latest or a step.'
    ) from e
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f'Cannot read the best step from {path}: {e}.') from e


def find_checkpoint(workdir: str, checkpoint: str = 'latest') -> tuple[str, int]:
  """Returns (checkpoint folder, step) named by `checkpoint`.

  Raises:
    UserError: for a bad name or a checkpoint that does not exist.
  """
  name = str(checkpoint).strip().lower()
  directory = checkpointing.checkpoint_dir(workdir)
  step = None
  if name == 'best':
    best_dir = os.path.join(os.path.abspath(workdir), BEST_DIR)
    if os.path.isdir(best_dir):
      directory = best_dir
    else:
      step = _recorded_best_step(workdir)
  elif name.isdigit():
    step = int(name)
  elif name != 'latest':
    raise UserError(
      f'--checkpoint={checkpoint!r} is not latest, best or a step number.'
    )
  steps = _manager(directory).all_steps() if os.path.isdir(directory) else []
  if not steps:
    raise UserError(f'No checkpoint in {directory}; train first or check --workdir.')
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise UserError(
      f'No checkpoint at step {step} in {directory}; it has steps '
      f'{", ".join(str(s) for s in sorted(steps))}.'
    )
  return directory, int(step)


def abstract_params(model: models.UNet, config) -> Any:
  """Shapes and dtypes of the parameters, without computing them."""
  height, width = config.image_size
  dummy = jax.ShapeDtypeStruct((1, height, width, config.num_channels), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), dummy)['params']


def _leaf_shapes(tree) -> dict[str, tuple]:
  return {
    jax.tree_util.keystr(path): tuple(leaf.shape)
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


def restore_params(directory: str, step: int, target) -> Any:
  """Reads the 'params' subtree of a checkpoint as numpy arrays.

  Args:
    directory: a CheckpointManager folder (e.g. WORKDIR/checkpoints).
    step: the step to read.
    target: the expected parameter tree (arrays or jax.ShapeDtypeStruct).

  Raises:
    UserError: if the checkpoint holds no parameters of the expected shapes.
  """
  manager = _manager(directory)
  where = f'{directory} (step {step})'
  try:
    metadata = manager.item_metadata(step)
    metadata = getattr(metadata, 'tree', metadata)
  except (OSError, ValueError, KeyError) as e:
    raise UserError(f'Cannot read the checkpoint in {where}: {e}.') from e
  if not metadata or 'params' not in metadata:
    raise UserError(f'The checkpoint in {where} holds no model parameters.')
  saved, expected = _leaf_shapes(metadata['params']), _leaf_shapes(target)
  problems = [
    f'{key}: saved {saved.get(key)} vs expected {expected.get(key)}'
    for key in sorted(set(saved) | set(expected))
    if saved.get(key) != expected.get(key)
  ]
  if problems:
    raise UserError(
      f'The checkpoint in {where} does not fit the model of config.json '
      f'({len(problems)} mismatched arrays, e.g. {problems[0]}).'
    )
  item = {
    'params': jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), target)
  }
  restore_args = jax.tree_util.tree_map(
    lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item
  )
  try:
    restored = manager.restore(
      step,
      args=ocp.args.PyTreeRestore(
        item, restore_args=restore_args, partial_restore=True
      ),
    )
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(
      f'Cannot restore the checkpoint in {where}: {str(e).splitlines()[0]}.'
    ) from e
  return restored['params']


def load(workdir: str, checkpoint: str = 'latest') -> Restored:
  """Loads config, model and parameters of a training workdir.

  Args:
    workdir: the folder training wrote.
    checkpoint: 'latest', 'best' or a step number.

  Returns:
    The restored model.

  Raises:
    UserError: a missing workdir, config.json or checkpoint, or a checkpoint
      that does not fit the config.
  """
  workdir = os.path.abspath(workdir)
  config = load_config(workdir)
  try:
    model = models.create_model(config)
  except (ValueError, AttributeError, KeyError) as e:
    raise UserError(f'{workdir}/config.json: {e}') from e
  directory, step = find_checkpoint(workdir, checkpoint)
  params = restore_params(directory, step, abstract_params(model, config))
  return Restored(config, model, params, step, os.path.join(directory, str(step)))
