"""Training and evaluation of (Sharp) U-Net over a one-axis device mesh.

The train step is one pure function compiled with `jax.jit` over a ('data',)
mesh: the train state is replicated, batches are sharded over the data axis
and the state's buffers are donated. The same code runs on 1 or N devices and
on several processes (see main.py for `jax.distributed`).
"""

import functools
import os
from typing import Optional

from absl import logging
from flax.training import train_state
import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
import ml_collections
import numpy as np

from sharp_unet_jax import workdirs
from sharp_unet_jax.compilation import meshes, xla_options
from sharp_unet_jax.data import input_pipeline, prefetch
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.evaluation import metrics, visualize
from sharp_unet_jax.model import models
from sharp_unet_jax.training import (
  checkpointing,
  failures,
  fault_injection,
  losses,
  preemption,
  run_setup,
  schedules,
  steps,
  watchdog,
)


class NonFiniteLossError(UserError):
  """The training loss became NaN or infinite."""


def check_config(
  config: ml_collections.ConfigDict, num_devices: Optional[int] = None
) -> None:
  """Fails early, with one clear line, on config values that cannot work.

  Args:
    config: a training config.
    num_devices: devices of the mesh the batches are split over; None: every
      device.

  Raises:
    UserError: naming the offending key.
  """
  try:
    models.create_model(config)
    losses.get_loss(config.loss)
    models.check_input_shape((1, *config.image_size, config.num_channels), config.depth)
  except ValueError as e:
    raise UserError(str(e)) from e
  schedules.check_config(config)
  input_pipeline.check_batch_size(config.batch_size, 'batch_size', num_devices)
  input_pipeline.check_batch_size(
    config.eval_batch_size, 'eval_batch_size', num_devices
  )
  for key in (
    'num_train_steps',
    'log_every_steps',
    'eval_every_steps',
    'checkpoint_every_steps',
  ):
    if config[key] <= 0:
      raise UserError(f'config.{key} must be positive, got {config[key]}.')
  if (config.get('checkpoint_every_seconds') or 0) < 0:
    raise UserError(
      'config.checkpoint_every_seconds must be 0 (off) or positive, got '
      f'{config.checkpoint_every_seconds}.'
    )


class Trainer:
  """Holds the mesh and the compiled steps of one training config."""

  def __init__(
    self, config: ml_collections.ConfigDict, mesh: Optional[jax.sharding.Mesh] = None
  ):
    """Builds the model and jits its steps for `mesh`.

    Args:
      config: a training config.
      mesh: the ('data',) mesh to compile for; None: every device
        (meshes.data_mesh). Its platform, not the host's, picks the compiler
        options, so a CPU host can compile the steps for a TPU or GPU mesh.

    Raises:
      UserError: for a config that cannot run on the mesh.
    """
    self.mesh = meshes.data_mesh() if mesh is None else mesh
    check_config(config, self.mesh.size)
    self.config = config
    self.platform = meshes.platform(self.mesh)
    self.replicated = NamedSharding(self.mesh, PartitionSpec())
    self.data_sharding = NamedSharding(self.mesh, PartitionSpec(meshes.AXIS))
    device = self.mesh.devices.flat[0]
    self.model = models.create_model(config, self.platform, device)
    self.compiler_options = xla_options.compute_options(self.platform)
    # XLA:CPU may run a process's queued programs at once. Across processes,
    # the collectives (gloo) of two train steps in flight can then wait on
    # each other for good: a two-process CPU run was seen stuck with process
    # 0 waiting on step 6 and process 1 on step 5. There each step ends
    # before the next starts (the train loop waits on it).
    self.one_step_at_a_time = self.platform == 'cpu' and jax.process_count() > 1
    self._jit_steps(config)

  def _jit_steps(self, config: ml_collections.ConfigDict) -> None:
    """The train, eval, predict and observe steps, jitted for the mesh."""
    loss_fn = losses.get_loss(config.loss)
    shardings = dict(
      in_shardings=(self.replicated, self.data_sharding),
      compiler_options=self.compiler_options,
    )
    augment = config.get('augment')
    self.train_step = jax.jit(
      functools.partial(
        steps.train_step,
        loss_fn=loss_fn,
        num_classes=config.num_classes,
        augment_config=augment if augment and augment.enabled else None,
        seed=config.seed,
      ),
      donate_argnums=(0,),
      out_shardings=self.replicated,
      **shardings,
    )
    # Metrics are sums over the batch: each device reduces its share.
    self.eval_step = jax.jit(
      functools.partial(
        steps.eval_step,
        apply_fn=self.model.apply,
        loss_fn=loss_fn,
        num_classes=config.num_classes,
      ),
      out_shardings=self.replicated,
      **shardings,
    )
    # Logits stay sharded over 'data', as the images come: no all-gather.
    self.predict = jax.jit(
      lambda params, images: self.model.apply({'params': params}, images),
      out_shardings=self.data_sharding,
      **shardings,
    )
    self._observe = jax.jit(
      functools.partial(schedules.observe, config=config),
      out_shardings=self.replicated,
    )

  def observe(self, state, value: float, step: int):
    """Feeds a validation value to plateau and tracker: (state, improved)."""
    opt_state, improved = self._observe(state.opt_state, value, step)
    return state.replace(opt_state=opt_state), bool(improved)

  def initial_state(self) -> train_state.TrainState:
    """Fresh state, created directly with replicated sharding."""
    return self.init_step(jax.random.key(self.config.seed))

  @functools.cached_property
  def init_step(self):
    """The jitted (rng -> state) initialisation, state replicated on the mesh."""
    create = functools.partial(steps.create_train_state, self.config, self.model)
    return jax.jit(
      create,
      out_shardings=self.replicated,
      compiler_options=xla_options.init_options(self.platform),
    )

  def global_batch(self, local: dict) -> dict:
    """This process's numpy batch -> global arrays sharded over the mesh."""
    return input_pipeline.make_global_batch(local, self.data_sharding)

  def evaluate(self, params, data) -> dict[str, float]:
    """Dataset-level and per-image metrics over a whole split.

    Each process reads its share of every padded batch; the metrics are
    accumulated on the devices over the global batches, so every process
    gets the scores of the whole split.
    """
    total = None
    host_batches = input_pipeline.eval_batches(data, self.config.eval_batch_size)
    with prefetch.DevicePrefetcher(host_batches, self.data_sharding) as batches:
      for batch in batches:
        batch_metrics = self.eval_step(params, batch)
        total = batch_metrics if total is None else total.merge(batch_metrics)
        # One batch at a time: the eval steps do not depend on each other, and
        # XLA:CPU may otherwise run two at once, whose collectives can then
        # wait for each other's threads (a hang, then an abort, seen here).
        total = jax.block_until_ready(total)
        watchdog.progress()
    return {k: float(v) for k, v in jax.device_get(total.compute()).items()}

  def summary_panels(self, params, data) -> np.ndarray:
    """Image | truth | prediction panels of the first few examples of `data`."""
    count = min(self.config.num_summary_images, len(data))
    size = -(-count // self.mesh.size) * self.mesh.size
    examples = data.read(np.arange(size) % len(data))
    images = input_pipeline.normalize(examples['image'])
    local = {'image': images[input_pipeline.process_slice(size)]}
    logits = self.predict(params, self.global_batch(local)['image'])
    logits = multihost_utils.process_allgather(logits, tiled=True)
    predicted = np.asarray(metrics.hard_predictions(logits))
    return visualize.comparison_panels(
      images[:count], examples['mask'][:count], predicted[:count]
    )


def _log_scalars(writer, step: int, prefix: str, values: dict) -> None:
  writer.write_scalars(step, {f'{prefix}/{k}': v for k, v in values.items()})


def _train_values(train_metrics, step: int, config, state) -> dict[str, float]:
  """Host values of the accumulated train metrics; fails on a non-finite loss."""
  values = {k: float(v) for k, v in jax.device_get(train_metrics.compute()).items()}
  values['learning_rate'] = schedules.current_learning_rate(
    config, state.opt_state, step
  )
  bad_step = values.pop('first_nonfinite_step')
  if np.isfinite(bad_step):
    raise NonFiniteLossError(
      f'The training loss became NaN or infinite at step {int(bad_step)}; the run '
      f'stopped at step {step} without saving that state (the latest checkpoint '
      'is older). Lower --config.learning_rate or check the data.'
    )
  return values


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains, evaluates periodically, checkpoints, and scores the test split.

  Launching again with the same workdir resumes from the latest checkpoint.
  At the end, the test-split metrics are written to WORKDIR/test_metrics.json.
  When the config monitors a validation metric (schedules.py: plateau, early
  stopping, best checkpoint), each evaluation feeds it; the best state is kept
  in WORKDIR/checkpoints_best, and with early stopping the run ends after
  `early_stopping_patience` evaluations without improvement and the test
  scores the best state (test_metrics.json then has checkpoint='best').
  On SIGTERM the run saves a checkpoint at the current step and returns early.

  Args:
    config: a training config (see configs/default.py).
    workdir: folder for checkpoints, TensorBoard summaries and results.

  Returns:
    The test metrics written to test_metrics.json, or, after a preemption,
    {'preempted': True, 'step': step}.

  Raises:
    UserError: for bad config, data, workdir or checkpoint, or a diverged run.
  """
  run = run_setup.set_up(Trainer(config), workdir)
  failures.set_checkpoint_dir(str(run.manager.directory))
  try:
    state = _train_loop(run)
    if state is None:
      return {'preempted': True, 'step': run.preempted_at}
    return _final_test(run, state)
  finally:
    run.manager.close()
    run.recipe.close()


def _evaluate(run: run_setup.Run, state, done: int):
  """One evaluation: scalars and overlays written, then the recipe consulted."""
  with watchdog.phase('evaluation'):
    values = run.trainer.evaluate(state.params, run.eval_data)
  _log_scalars(run.writer, done, 'eval', values)
  logging.info('step %d: eval dice=%.4f iou=%.4f', done, values['dice'], values['iou'])
  with watchdog.phase('summary'):
    panels = run.trainer.summary_panels(state.params, run.eval_data)
  run.writer.write_images(done, {'eval/overlays': panels})
  return run.recipe.after_evaluation(state, values, done)


def _host_batches(run: run_setup.Run, start_step: int):
  """The host batches of the steps from `start_step` on, made as they are read."""
  config, process = run.config, jax.process_index()
  return (
    fault_injection.stall_if_requested(process, step, 'input')
    or input_pipeline.train_batch(run.train_data, config, step)
    for step in range(start_step, config.num_train_steps)
  )


def _stop_preempted(run: run_setup.Run, done: int) -> None:
  """After the preemption's checkpoint: waits for it, flushes, records the step."""
  with watchdog.phase('checkpoint write'):
    run.manager.wait_until_finished()
  run.writer.flush()
  logging.warning('Preempted: checkpoint at step %d saved in %s.', done, run.workdir)
  run.preempted_at = done


def _train_loop(run: run_setup.Run):
  """Trains from the state's step; returns the last state, or None if preempted."""
  config, trainer, state = run.config, run.trainer, run.state
  start_step = int(state.step)
  train_metrics = None
  stopped = run.recipe.stopped(state)
  process = jax.process_index()
  host_batches = _host_batches(run, start_step)
  depth = config.get('prefetch_batches', 2)
  with (
    preemption.PreemptionWatcher() as watcher,
    prefetch.DevicePrefetcher(host_batches, trainer.data_sharding, depth) as batches,
  ):
    for step in range(start_step, config.num_train_steps):
      if stopped:
        break
      with watchdog.waiting_for_input():
        batch = next(batches)
      fault_injection.stall_if_requested(process, step, 'step')
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, step_metrics = trainer.train_step(state, batch)
      if trainer.one_step_at_a_time:
        jax.block_until_ready((state, step_metrics))
      train_metrics = (
        step_metrics if train_metrics is None else train_metrics.merge(step_metrics)
      )
      done = step + 1
      watchdog.step_done(done)
      for hook in run.hooks:
        hook(done)
      is_last = done == config.num_train_steps
      preempted = watcher.should_stop(done)
      eval_now = is_last or done % config.eval_every_steps == 0
      checkpoint_now = (
        is_last
        or preempted
        or done % config.checkpoint_every_steps == 0
        or run.save_clock.due(done)
      )
      if eval_now or checkpoint_now or done % config.log_every_steps == 0:
        values = _train_values(train_metrics, done, config, state)
        _log_scalars(run.writer, done, 'train', values)
        train_metrics = None
      if eval_now:
        state, stopped = _evaluate(run, state, done)
      if checkpoint_now or stopped:
        with watchdog.phase('checkpoint write'):
          checkpointing.save(run.manager, done, state, force=preempted)
        run.save_clock.saved()
      if preempted:
        _stop_preempted(run, done)
        return None
  with watchdog.phase('checkpoint write'):
    run.manager.wait_until_finished()
  return state


def _final_test(run: run_setup.Run, state) -> dict:
  """Scores the test split with the last (or, early stopped, the best) state."""
  config = run.config
  last_step = int(state.step)
  state = run.recipe.state_for_test(state)
  test_data = input_pipeline.load_split(config, config.test_split)
  with watchdog.phase('evaluation'):
    results = run.trainer.evaluate(state.params, test_data)
  results.update(
    step=int(state.step),
    last_step=last_step,
    checkpoint='best' if int(state.step) != last_step else 'latest',
    split=config.test_split,
    num_examples=len(test_data),
    model=config.model,
  )
  _log_scalars(
    run.writer, results['step'], 'test', {k: results[k] for k in ('dice', 'iou')}
  )
  run.writer.flush()
  if jax.process_index() == 0:
    path = os.path.join(run.workdir, 'test_metrics.json')
    workdirs.write_json_atomically(path, results)
  return results
