r"""Trains the N seeds of one model at once: `jax.vmap` over replicas.

The replicas' train states (parameters and Adam states) are stacked on a
leading axis and one jitted, vmapped train step updates all of them. Each
replica gets its own batches: replica k's batch at step s is exactly the
batch its sequential run (seed k) sees, `input_pipeline.train_batch` keyed by
(seed k, s), and its initial parameters and augmentation keys come from seed
k too. A vmapped run therefore trains the same N models as N sequential runs,
up to floating-point reassociation in the batched convolutions.

Scope: one device (the replicas axis is the parallelism; a data-parallel mesh
is not used), constant or cosine schedules, no early stopping, no
reduce-on-plateau and no best checkpoint (those need per-replica control
flow). No periodic validation. The stacked state is checkpointed in
`state_dir` every `checkpoint_every_steps` steps, so an interrupted run
resumes; at the end each replica is written to its own run folder exactly
like a sequential run (config.json, checkpoints/<step>, test_metrics.json),
so the experiment (experiment/seeds.py) treats both alike.

Its speed against seeds trained one after another: benchmarks/replicas.py.
"""

import functools
import os
import time
from typing import Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from sharp_unet_jax import workdirs
from sharp_unet_jax.compilation import xla_options
from sharp_unet_jax.data import input_pipeline
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.training import checkpointing, losses, schedules, steps, train


def check_supported(config) -> None:
  """Raises UserError for settings the vmapped trainer does not support."""
  if schedules.uses_monitor(config):
    raise UserError(
      '--vmap trains without validation: use --config.schedule=constant or '
      'cosine, and no early_stopping or save_best_checkpoint.'
    )


def stack(trees):
  """Stacks equal trees (one per replica) on a new leading axis."""
  return jax.tree.map(lambda *leaves: np.stack(leaves), *trees)


def _unstack(tree, index: int):
  return jax.tree.map(lambda leaf: leaf[index], tree)


class ReplicaTrainer:
  """Compiled vmapped init and train step of one model config over seeds."""

  def __init__(self, config):
    check_supported(config)
    train.check_config(config)
    self.config = config
    self.trainer = train.Trainer(config)
    model = self.trainer.model
    augment = config.get('augment')
    step_fn = functools.partial(
      steps.train_step,
      loss_fn=losses.get_loss(config.loss),
      num_classes=config.num_classes,
      augment_config=augment if augment and augment.enabled else None,
    )
    self.train_step = jax.jit(
      jax.vmap(lambda state, batch, seed: step_fn(state, batch, seed=seed)),
      donate_argnums=(0,),
      compiler_options=self.trainer.compiler_options,
    )
    create = functools.partial(steps.create_train_state, config, model)
    self.init = jax.jit(
      jax.vmap(lambda seed: create(jax.random.key(seed))),
      compiler_options=xla_options.init_options(self.trainer.platform),
    )


def seed_configs(config, seeds) -> list:
  """One resolved copy of `config` per seed, config.seed set to it."""
  configs = []
  for seed in seeds:
    one = config.copy_and_resolve_references()
    one.seed = int(seed)
    configs.append(one)
  return configs


def train_replicas(
  config, seeds: Sequence[int], run_dirs: Sequence[str], state_dir: str
) -> dict:
  """Trains one replica per seed at once and writes each run's results.

  Args:
    config: the run config (model included); config.seed is ignored.
    seeds: one seed per replica.
    run_dirs: one run folder per replica (as a sequential run would use).
    state_dir: folder of the stacked checkpoints, for resuming.

  Returns:
    {'seconds': wall time of the training loop, 'steps': steps run now,
     'results': the test metrics of each replica}.

  Raises:
    UserError: for unsupported settings or a diverged replica.
  """
  seeds = [int(s) for s in seeds]
  configs = seed_configs(config, seeds)
  replicas = ReplicaTrainer(configs[0])
  train_data = input_pipeline.load_train_split(config)
  seed_array = jnp.asarray(seeds, jnp.int32)

  manager = checkpointing.create_manager(workdirs.prepare(state_dir), 1)
  state = replicas.init(seed_array)
  if manager.latest_step() is not None:
    state = checkpointing.restore(manager, state)
    logging.info('vmap: resumed %d replicas at step %d.', len(seeds), state.step[0])
  start = int(state.step[0])
  begin = time.perf_counter()
  for step in range(start, config.num_train_steps):
    batch = stack([input_pipeline.train_batch(train_data, c, step) for c in configs])
    state, step_metrics = replicas.train_step(state, batch, seed_array)
    done = step + 1
    if done % config.log_every_steps == 0 or done == config.num_train_steps:
      _log_losses(step_metrics, seeds, done)
    if done % config.checkpoint_every_steps == 0 or done == config.num_train_steps:
      checkpointing.save(manager, done, state)
  jax.block_until_ready(state)
  seconds = time.perf_counter() - begin
  manager.wait_until_finished()
  manager.close()
  results = [
    _write_run(replicas.trainer, configs[k], _unstack(state, k), run_dirs[k])
    for k in range(len(seeds))
  ]
  return {
    'seconds': seconds,
    'steps': config.num_train_steps - start,
    'results': results,
  }


def _log_losses(step_metrics, seeds, done: int) -> None:
  """Logs each replica's loss; raises NonFiniteLossError naming diverged seeds."""
  loss = np.asarray(jax.device_get(step_metrics.loss.compute()))
  if not np.all(np.isfinite(loss)):
    raise train.NonFiniteLossError(
      f'vmap: the training loss of seeds {np.asarray(seeds)[~np.isfinite(loss)]} '
      f'became NaN or infinite by step {done}.'
    )
  logging.info('vmap step %d: loss per replica %s', done, np.round(loss, 4))


def _write_run(trainer, config, state, run_dir: str) -> dict:
  """Saves one replica like a sequential run and scores the test split."""
  run_dir = workdirs.prepare(run_dir)
  state = jax.device_put(state, trainer.replicated)
  workdirs.write_json_atomically(os.path.join(run_dir, 'config.json'), config.to_dict())
  manager = checkpointing.create_manager(run_dir, config.max_checkpoints_to_keep)
  checkpointing.save(manager, int(state.step), state, force=True)
  manager.wait_until_finished()
  manager.close()
  test_data = input_pipeline.load_split(config, config.test_split)
  results = trainer.evaluate(state.params, test_data)
  results.update(
    step=int(state.step),
    last_step=int(state.step),
    checkpoint='latest',
    split=config.test_split,
    num_examples=len(test_data),
    model=config.model,
    mode='vmap',
  )
  workdirs.write_json_atomically(os.path.join(run_dir, 'test_metrics.json'), results)
  return results
