"""Training and evaluation of (Sharp) U-Net over a one-axis device mesh.

The train step is one pure function compiled with `jax.jit` over a ('data',)
mesh: the train state is replicated, batches are sharded over the data axis
and the state's buffers are donated. The same code runs on 1 or N devices and
on several processes (see main.py for `jax.distributed`).
"""

import functools
import json
import os
import tempfile
from typing import Any

from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
import flax.linen as nn
from flax.training import train_state
import jax
from jax.sharding import NamedSharding, PartitionSpec
import ml_collections
import numpy as np
import optax

from sharp_unet_jax import (
  checkpointing,
  input_pipeline,
  losses,
  metrics,
  models,
  visualize,
)
from sharp_unet_jax.errors import UserError


class NonFiniteLossError(UserError):
  """The training loss became NaN or infinite."""


def check_config(config: ml_collections.ConfigDict) -> None:
  """Fails early, with one clear line, on config values that cannot work.

  Raises:
    UserError: naming the offending key.
  """
  try:
    models.create_model(config)
    losses.get_loss(config.loss)
    models.check_input_shape((1, *config.image_size, config.num_channels), config.depth)
  except ValueError as e:
    raise UserError(str(e)) from e
  input_pipeline.check_batch_size(config.batch_size, 'batch_size')
  input_pipeline.check_batch_size(config.eval_batch_size, 'eval_batch_size')
  for key in ('num_train_steps', 'log_every_steps', 'eval_every_steps'):
    if config[key] <= 0:
      raise UserError(f'config.{key} must be positive, got {config[key]}.')


def prepare_workdir(workdir: str) -> str:
  """Creates `workdir` if needed and checks it is writable; returns its path.

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
  """Writes JSON to `path` through a temporary file, so it is never half-written."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


def make_optimizer(config) -> optax.GradientTransformation:
  """Adam with the paper's (Keras default) hyper-parameters."""
  return optax.adam(
    config.learning_rate, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps
  )


def create_train_state(config, model: nn.Module, rng) -> train_state.TrainState:
  """Initial parameters and optimiser state (step 0)."""
  params = models.init_params(model, config, rng)
  return train_state.TrainState.create(
    apply_fn=model.apply, params=params, tx=make_optimizer(config)
  )


def _overlap_outputs(logits, labels, num_classes: int) -> dict:
  intersection, predicted, true = metrics.overlap_counts(
    metrics.hard_predictions(logits), labels, max(num_classes, 2)
  )
  return {'intersection': intersection, 'predicted': predicted, 'true': true}


def train_step(state, batch, *, loss_fn, num_classes):
  """One Adam update on a global batch; returns the new state and metrics."""

  def compute_loss(params):
    logits = state.apply_fn({'params': params}, batch['image'])
    return loss_fn(logits, batch['mask']), logits

  (loss, logits), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads)
  outputs = _overlap_outputs(logits, batch['mask'], num_classes)
  return state, metrics.TrainMetrics.single_from_model_output(loss=loss, **outputs)


def eval_step(params, batch, *, apply_fn, loss_fn, num_classes):
  """Metrics of one padded evaluation batch (padding masked by 'valid')."""
  logits = apply_fn({'params': params}, batch['image'])
  per_example_loss = jax.vmap(lambda x, y: loss_fn(x[None], y[None]))(
    logits, batch['mask']
  )
  return metrics.EvalMetrics.single_from_model_output(
    loss=per_example_loss,
    mask=batch['valid'],
    **_overlap_outputs(logits, batch['mask'], num_classes),
  )


class Trainer:
  """Holds the mesh, the compiled steps and the data of one training run."""

  def __init__(self, config: ml_collections.ConfigDict):
    check_config(config)
    self.config = config
    self.mesh = jax.make_mesh((jax.device_count(),), ('data',))
    self.replicated = NamedSharding(self.mesh, PartitionSpec())
    self.data_sharding = NamedSharding(self.mesh, PartitionSpec('data'))
    self.model = models.create_model(config)
    loss_fn = losses.get_loss(config.loss)
    self.train_step = jax.jit(
      functools.partial(train_step, loss_fn=loss_fn, num_classes=config.num_classes),
      in_shardings=(self.replicated, self.data_sharding),
      out_shardings=self.replicated,
      donate_argnums=(0,),
    )
    self.eval_step = jax.jit(
      functools.partial(
        eval_step,
        apply_fn=self.model.apply,
        loss_fn=loss_fn,
        num_classes=config.num_classes,
      ),
      in_shardings=(self.replicated, self.data_sharding),
      out_shardings=self.replicated,
    )
    self.predict = jax.jit(
      lambda params, images: self.model.apply({'params': params}, images),
      in_shardings=(self.replicated, self.data_sharding),
      out_shardings=self.replicated,
    )

  def initial_state(self) -> train_state.TrainState:
    """Fresh state, created directly with replicated sharding."""
    rng = jax.random.key(self.config.seed)
    create = functools.partial(create_train_state, self.config, self.model)
    # Initialisation runs once; on CPU, optimising its many PRNG kernels takes
    # far longer (about 10 s) than running them unoptimised.
    options = (
      {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else None
    )
    return jax.jit(create, out_shardings=self.replicated, compiler_options=options)(rng)

  def global_batch(self, local: dict) -> dict:
    return input_pipeline.make_global_batch(local, self.data_sharding)

  def evaluate(self, params, data: input_pipeline.SplitData) -> dict[str, float]:
    """Dataset-level and per-image metrics over a whole split."""
    total = None
    for local in input_pipeline.eval_batches(data, self.config.eval_batch_size):
      batch_metrics = self.eval_step(params, self.global_batch(local))
      total = batch_metrics if total is None else total.merge(batch_metrics)
    return {k: float(v) for k, v in jax.device_get(total.compute()).items()}

  def summary_panels(self, params, data: input_pipeline.SplitData) -> np.ndarray:
    """Image | truth | prediction panels of the first few examples of `data`."""
    count = min(self.config.num_summary_images, len(data))
    size = -(-count // jax.device_count()) * jax.device_count()
    indices = np.arange(size) % len(data)
    images = input_pipeline.normalize(data.images[indices])
    local = {'image': images[input_pipeline.process_slice(size)]}
    logits = self.predict(params, self.global_batch(local)['image'])
    predicted = np.asarray(metrics.hard_predictions(jax.device_get(logits)))
    return visualize.comparison_panels(
      images[:count], data.masks[indices][:count], predicted[:count]
    )


def _log_scalars(writer, step: int, prefix: str, values: dict) -> None:
  writer.write_scalars(step, {f'{prefix}/{k}': v for k, v in values.items()})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains, evaluates periodically, checkpoints, and scores the test split.

  Launching again with the same workdir resumes from the latest checkpoint.
  At the end, the test-split metrics are written to WORKDIR/test_metrics.json.

  Args:
    config: a training config (see configs/default.py).
    workdir: folder for checkpoints, TensorBoard summaries and results.

  Returns:
    The test metrics written to test_metrics.json.

  Raises:
    UserError: for bad config, data, workdir or checkpoint, or a diverged run.
  """
  workdir = prepare_workdir(workdir)
  trainer = Trainer(config)
  is_chief = jax.process_index() == 0
  logging.info(
    'Process %d/%d, %d devices: %s',
    jax.process_index(),
    jax.process_count(),
    jax.device_count(),
    jax.devices(),
  )
  train_data = input_pipeline.load_split(config, config.train_split)
  eval_data = input_pipeline.load_split(config, config.eval_split)
  logging.info(
    '%d training and %d validation examples.', len(train_data), len(eval_data)
  )

  state = trainer.initial_state()
  manager = checkpointing.create_manager(workdir, config.max_checkpoints_to_keep)
  if manager.latest_step() is not None:
    state = checkpointing.restore(manager, state)
    logging.info('Resumed from the checkpoint at step %d.', int(state.step))
  elif is_chief:
    write_json_atomically(os.path.join(workdir, 'config.json'), config.to_dict())
  start_step = int(state.step)

  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  if start_step == 0:
    writer.write_hparams({k: str(v) for k, v in config.to_dict().items()})
    parameter_overview.log_parameter_overview(state.params)
  hooks = []
  if is_chief:
    hooks.append(
      periodic_actions.ReportProgress(
        num_train_steps=config.num_train_steps, writer=writer, every_secs=30
      )
    )

  train_metrics = None
  for step in range(start_step, config.num_train_steps):
    local = input_pipeline.train_batch(train_data, config, step)
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      state, step_metrics = trainer.train_step(state, trainer.global_batch(local))
    train_metrics = (
      step_metrics if train_metrics is None else train_metrics.merge(step_metrics)
    )
    done = step + 1
    for hook in hooks:
      hook(done)
    is_last = done == config.num_train_steps
    checkpoint_now = is_last or done % config.checkpoint_every_steps == 0
    if is_last or checkpoint_now or done % config.log_every_steps == 0:
      values = {k: float(v) for k, v in jax.device_get(train_metrics.compute()).items()}
      if not np.isfinite(values['loss']):
        raise NonFiniteLossError(
          f'The training loss became {values["loss"]} by step {done}; no checkpoint '
          'of this state was saved. Lower --config.learning_rate or check the data.'
        )
      _log_scalars(writer, done, 'train', values)
      train_metrics = None
    if is_last or done % config.eval_every_steps == 0:
      values = trainer.evaluate(state.params, eval_data)
      _log_scalars(writer, done, 'eval', values)
      logging.info(
        'step %d: eval dice=%.4f iou=%.4f', done, values['dice'], values['iou']
      )
      writer.write_images(
        done, {'eval/overlays': trainer.summary_panels(state.params, eval_data)}
      )
    if checkpoint_now:
      checkpointing.save(manager, done, state)
  manager.wait_until_finished()

  test_data = input_pipeline.load_split(config, config.test_split)
  results = trainer.evaluate(state.params, test_data)
  results.update(
    step=int(state.step),
    split=config.test_split,
    num_examples=len(test_data),
    model=config.model,
  )
  _log_scalars(
    writer, int(state.step), 'test', {k: results[k] for k in ('dice', 'iou')}
  )
  writer.flush()
  if is_chief:
    write_json_atomically(os.path.join(workdir, 'test_metrics.json'), results)
  manager.close()
  return results
