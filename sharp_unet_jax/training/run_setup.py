"""The set-up of one training run: data, checkpoint managers, the restored or
fresh state, summary writers and progress hooks (see `train.train_and_evaluate`)."""

import dataclasses
import os
from typing import Any, Optional

from absl import logging
import jax
import ml_collections

from sharp_unet_jax import workdirs
from sharp_unet_jax.data import data_source, input_pipeline
from sharp_unet_jax.training import checkpointing
from sharp_unet_jax.training import recipe as recipe_lib


@dataclasses.dataclass
class Run:
  """What the three parts of `train.train_and_evaluate` share."""

  config: ml_collections.ConfigDict
  workdir: str
  trainer: Any  # train.Trainer
  train_data: Any
  eval_data: Any
  manager: Any
  recipe: recipe_lib.Recipe
  state: Any
  writer: Any
  hooks: list
  save_clock: checkpointing.SaveClock
  preempted_at: Optional[int] = None


def set_up(trainer, workdir: str) -> Run:
  """Data, checkpoint managers, the restored or fresh state, writers and hooks.

  Args:
    trainer: the `train.Trainer` of the run's config.
    workdir: the run's folder (created if needed).
  """
  # clu's writers bring in TensorFlow: imported when a run starts, not by the
  # programs that only compile steps (aot, plan), and kept off the GPUs first.
  data_source.tensorflow()
  from clu import metric_writers, parameter_overview, periodic_actions  # noqa: PLC0415

  config = trainer.config
  workdir = workdirs.prepare(workdir)
  is_chief = jax.process_index() == 0
  train_data = input_pipeline.load_train_split(config)
  eval_data = input_pipeline.load_split(config, config.eval_split)
  logging.info('%d training, %d validation examples.', len(train_data), len(eval_data))

  manager = checkpointing.create_manager(workdir, config.max_checkpoints_to_keep)
  recipe = recipe_lib.Recipe(trainer, workdir)
  state = _restore_or_start(trainer, manager, workdir)
  # Only process 0 writes summaries; the others get a writer that drops them.
  writer = (
    metric_writers.create_default_writer(workdir)
    if is_chief
    else metric_writers.MultiWriter([])
  )
  if int(state.step) == 0:
    writer.write_hparams({k: str(v) for k, v in config.to_dict().items()})
    parameter_overview.log_parameter_overview(state.params)
  hooks = []
  if is_chief:
    hooks.append(
      periodic_actions.ReportProgress(
        num_train_steps=config.num_train_steps, writer=writer, every_secs=30
      )
    )
  return Run(
    config,
    workdir,
    trainer,
    train_data,
    eval_data,
    manager,
    recipe,
    state,
    writer,
    hooks,
    checkpointing.SaveClock(config.get('checkpoint_every_seconds')),
  )


def _restore_or_start(trainer, manager, workdir: str):
  """The newest intact checkpoint's state, or a fresh one (recording the config)."""
  state = trainer.initial_state()
  restored = checkpointing.restore_newest_intact(manager, state)
  if restored is not None:
    state = restored
    logging.info('Resumed from the checkpoint at step %d.', int(state.step))
  elif jax.process_index() == 0:
    config_dict = trainer.config.to_dict()
    workdirs.write_json_atomically(os.path.join(workdir, 'config.json'), config_dict)
  return state
