"""Loads a training workdir for inference: its config, model and parameters.

The config comes back from WORKDIR/config.json (written by the first launch
of training); the parameters are read from an Orbax checkpoint, as numpy
arrays, without unpickling anything, by `checkpointing.restore_params` (the
one Orbax handler that training writes with).

Checkpoints are chosen by name:
- 'latest': the newest step in WORKDIR/checkpoints;
- 'best': the newest step in WORKDIR/checkpoints_best (the best checkpoint
  training keeps when the config asks for it);
- a step number, e.g. '1200': that step in WORKDIR/checkpoints.
"""

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from sharp_unet_jax.errors import UserError
from sharp_unet_jax.model import models
from sharp_unet_jax.training import checkpointing

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

  def for_platform(self, platform: str, device: Any = None) -> 'Restored':
    """This model with implementation='auto' resolved for programs on
    `platform` and `device`'s chip (network.form_for_platform): its programs
    then trace one form."""
    if self.model.implementation != 'auto':
      return self
    model = models.create_model(self.config, platform, device)
    return dataclasses.replace(self, model=model)


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


def find_checkpoint(workdir: str, checkpoint: str = 'latest') -> tuple[str, int]:
  """Returns (checkpoint folder, step) named by `checkpoint`.

  Raises:
    UserError: for a bad name or a checkpoint that does not exist.
  """
  name = str(checkpoint).strip().lower()
  directory = checkpointing.checkpoint_dir(workdir)
  step = None
  if name == 'best':
    best_dir = checkpointing.checkpoint_dir(workdir, checkpointing.BEST)
    if not os.path.isdir(best_dir):
      raise UserError(
        f'--checkpoint=best: {workdir} has no best checkpoint ({checkpointing.BEST}/); '
        'use --checkpoint=latest or a step.'
      )
    directory = best_dir
  elif name.isdigit():
    step = int(name)
  elif name != 'latest':
    raise UserError(
      f'--checkpoint={checkpoint!r} is not latest, best or a step number.'
    )
  steps = (
    checkpointing.read_only_manager(directory).all_steps()
    if os.path.isdir(directory)
    else []
  )
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
  params = checkpointing.restore_params(directory, step, abstract_params(model, config))
  return Restored(config, model, params, step, os.path.join(directory, str(step)))
