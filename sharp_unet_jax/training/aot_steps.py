"""The Trainer's init, train, eval and predict steps, compiled for a target.

Every step is the Trainer's own jitted function, built for the target's mesh
and lowered with abstract inputs (shapes, dtypes and shardings; no data), so
what is compiled is what training would run there. The compiling and the
reports are compilation/compile_reports.py's.
"""

from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from sharp_unet_jax.compilation import compile_reports, targets
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.model import models, network
from sharp_unet_jax.training import train

STEPS = ('init', 'train', 'eval', 'predict')
# The config key that sizes each step's memory most.
_MEMORY_KEYS = {
  'init': 'num_filters',
  'train': 'batch_size',
  'eval': 'eval_batch_size',
  'predict': 'eval_batch_size',
}


def _abstract(shape, dtype, sharding: NamedSharding) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def abstract_batch(config, sharding, batch_size: int, evaluation: bool) -> dict:
  """Shapes of a global batch as input_pipeline makes them."""
  height, width = config.image_size
  images = (batch_size, height, width, config.num_channels)
  batch = {
    'image': _abstract(images, jnp.float32, sharding),
    'mask': _abstract(images[:3], jnp.int32, sharding),
  }
  if evaluation:
    batch['valid'] = _abstract((batch_size,), jnp.float32, sharding)
  elif config.get('weight_map', False):
    batch['weights'] = _abstract(images[:3], jnp.float32, sharding)
  return batch


def step_inputs(trainer: train.Trainer) -> dict[str, tuple[Callable, tuple]]:
  """Each step's jitted function and abstract arguments."""
  config, replicated = trainer.config, trainer.replicated
  key = jax.eval_shape(lambda: jax.random.key(config.seed))
  key = _abstract(key.shape, key.dtype, replicated)
  state = jax.tree_util.tree_map(
    lambda x: _abstract(x.shape, x.dtype, replicated),
    jax.eval_shape(trainer.init_step, key),
  )
  data = trainer.data_sharding
  train_batch = abstract_batch(config, data, config.batch_size, False)
  eval_batch = abstract_batch(config, data, config.eval_batch_size, True)
  return {
    'init': (trainer.init_step, (key,)),
    'train': (trainer.train_step, (state, train_batch)),
    'eval': (trainer.eval_step, (state.params, eval_batch)),
    'predict': (trainer.predict, (state.params, eval_batch['image'])),
  }


def images_per_device(config, devices: int) -> dict[str, int]:
  """Images each device handles per call of each step."""
  return {
    'init': 0,
    'train': config.batch_size // devices,
    'eval': config.eval_batch_size // devices,
    'predict': config.eval_batch_size // devices,
  }


def compute_dtype(config, target: targets.Target) -> str:
  """The dtype the config's steps compute in on the target's devices."""
  return models.compute_dtype(config.dtype, target.platform, target.devices[0])


def compile_all(
  config, target: targets.Target, on_step=None, steps=STEPS
) -> dict[str, dict]:
  """Compiles the named steps (all by default) for `target`; their reports.

  Args:
    config: a training config.
    target: where to compile for.
    on_step: called with (name, report) as each step is done.
    steps: names of the steps to compile, of STEPS.

  Raises:
    UserError: if the config cannot run on the target's mesh.
  """
  trainer = train.Trainer(config, target.mesh())
  images = images_per_device(config, trainer.mesh.size)
  chosen = {k: v for k, v in step_inputs(trainer).items() if k in steps}
  dtype = compute_dtype(config, target)
  forms = step_forms(trainer)

  def with_form(name, report):
    report['form'] = forms[name]
    if on_step is not None:
      on_step(name, report)

  return compile_reports.compile_steps(chosen, target, dtype, images, with_form)


def step_forms(trainer: train.Trainer) -> dict[str, str]:
  """The model's form in each step's program (network.py); for 'auto' on a
  GPU target (CUDA), the form its programs take."""

  form = trainer.model.implementation
  if form == 'auto' and trainer.platform == 'gpu':
    form = network.AUTO_GPU_FORM
  return dict.fromkeys(STEPS, form)


def check_fits(reports: dict[str, dict]) -> None:
  """Raises UserError naming config.batch_size if a step needs more memory."""
  for name, report in reports.items():
    peak, limit = report.get('peak_bytes'), report.get('device_memory_bytes')
    if peak and limit and peak > limit:
      key = _MEMORY_KEYS[name]
      raise UserError(
        f'The {name} step needs {peak / 2**30:.2f} GiB per device, more than the '
        f"device's {limit / 2**30:.2f} GiB (compiler estimate); lower "
        f'--config.{key} or use --config.dtype=bfloat16.'
      )
