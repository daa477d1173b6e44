r"""The paper's Keras model, on Keras 3's JAX back end, compiled for a target.

  python -m sharp_unet_jax.benchmarks.keras_aot --config=configs/isic.py \
      --target=tpu:v5e:2x2

Compiles a train, an eval and a predict step of
`keras_reference.build_keras_unet` (the paper's layers; Adam(1e-3, eps 1e-7)
and binary cross-entropy on logits, as ours; the train and eval steps also
compute the paper's soft Jaccard and Dice, as its `model.fit` and
`model.evaluate` do) for the config's image size, batch, dtype (bfloat16 is
Keras' 'mixed_bfloat16' policy: float32 variables, bfloat16 compute) and the
target's ('data',) mesh, with the same shardings and compiler options as our
steps. Prints each summary as `aot` does and, last, one JSON object
{"target", "config", "steps": {"train", "eval", "predict"}}. `python -m
sharp_unet_jax.aot ... --peer=keras` runs this program and sets the two side
by side. Keras picks its back end when it is first imported, so this program
runs in a process of its own and sets KERAS_BACKEND=jax before anything
imports Keras.
"""

import os

os.environ['KERAS_BACKEND'] = 'jax'

import json  # noqa: E402

from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from sharp_unet_jax import aot, cli  # noqa: E402
from sharp_unet_jax.compilation import compile_reports, targets, xla_options  # noqa: E402
from sharp_unet_jax.model import models  # noqa: E402
from sharp_unet_jax.training import aot_steps  # noqa: E402

FLAGS = flags.FLAGS


def paper_metrics(batch, logits) -> dict:
  """The paper's compiled Keras metrics of one batch (PAPER.md): the mean
  binary cross-entropy and the soft Jaccard and Dice over the flattened
  batch, which `model.fit` computes every train step and `model.evaluate`
  every batch."""
  import keras  # noqa: PLC0415

  logits = logits.astype(jnp.float32)
  labels = batch['mask'][..., None].astype(jnp.float32)
  loss = keras.losses.binary_crossentropy(labels, logits, from_logits=True)
  probabilities = jax.nn.sigmoid(logits)
  intersection = jnp.sum(labels * probabilities)
  total = jnp.sum(labels) + jnp.sum(probabilities)
  return {
    'loss': jnp.mean(loss),
    'jaccard': intersection / (total - intersection),
    'dice': (2 * intersection + 1) / (total + 1),
  }


def keras_train_step(model, optimizer):
  """A pure (state, batch) -> (state, metrics) train step of a Keras model,
  with the paper's metrics (paper_metrics) as `model.fit` computes them."""

  def step(state, batch):
    trainable, non_trainable, optimizer_vars = state

    def compute_loss(variables):
      logits, new_non_trainable = model.stateless_call(
        variables, non_trainable, batch['image'], training=True
      )
      step_metrics = paper_metrics(batch, logits)
      return step_metrics['loss'], (new_non_trainable, step_metrics)

    (_, (non_trainable, step_metrics)), grads = jax.value_and_grad(
      compute_loss, has_aux=True
    )(trainable)
    trainable, optimizer_vars = optimizer.stateless_apply(
      optimizer_vars, grads, trainable
    )
    return (trainable, non_trainable, optimizer_vars), step_metrics

  return step


def keras_eval_step(model):
  """A pure (variables, batch) -> metrics step of a Keras model: what the
  paper's `model.evaluate` computes per batch (paper_metrics)."""

  def evaluate(variables, batch):
    trainable, non_trainable = variables
    logits, _ = model.stateless_call(trainable, non_trainable, batch['image'])
    return paper_metrics(batch, logits)

  return evaluate


def keras_predict_step(model):
  """A pure (variables, images) -> logits step of a Keras model."""

  def predict(variables, images):
    trainable, non_trainable = variables
    logits, _ = model.stateless_call(trainable, non_trainable, images)
    return logits.astype(jnp.float32)

  return predict


def build(config, platform: str):
  """The paper's model and its optimiser for `config` (binary segmentation),
  in the compute dtype config.dtype names on `platform`."""
  import keras  # noqa: PLC0415

  from sharp_unet_jax.interop import keras_reference  # noqa: PLC0415

  if config.num_classes != 1:
    raise ValueError('The Keras peer is the paper binary model: num_classes=1.')
  dtype = models.compute_dtype(config.dtype, platform)
  policy = {'float32': 'float32', 'bfloat16': 'mixed_bfloat16'}[dtype]
  keras.config.set_dtype_policy(policy)
  model = keras_reference.build_keras_unet(
    (*config.image_size, config.num_channels),
    config.num_classes,
    config.num_filters,
    config.depth,
    sharp=config.model == 'sharp_unet',
    output_activation=None,
  )
  optimizer = keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-7)
  optimizer.build(model.trainable_variables)
  return model, optimizer


def step_inputs(config, target) -> dict:
  """{'train', 'eval', 'predict'}: each Keras step jitted for the target, with its
  abstract arguments (shapes, dtypes and shardings, no data)."""
  model, optimizer = build(config, target.platform)
  mesh = target.mesh()
  replicated = NamedSharding(mesh, PartitionSpec())
  data = NamedSharding(mesh, PartitionSpec('data'))
  options = dict(compiler_options=xla_options.compute_options(target.platform))

  def abstract(variables):
    return [
      jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=replicated) for v in variables
    ]

  trainable = abstract(model.trainable_variables)
  non_trainable = abstract(model.non_trainable_variables)
  state = (trainable, non_trainable, abstract(optimizer.variables))
  batch = aot_steps.abstract_batch(config, data, config.batch_size, False)
  images = aot_steps.abstract_batch(config, data, config.eval_batch_size, True)
  train = jax.jit(
    keras_train_step(model, optimizer),
    in_shardings=(replicated, data),
    out_shardings=replicated,
    donate_argnums=(0,),
    **options,
  )
  evaluate = jax.jit(
    keras_eval_step(model),
    in_shardings=(replicated, data),
    out_shardings=replicated,
    **options,
  )
  predict = jax.jit(
    keras_predict_step(model),
    in_shardings=(replicated, data),
    out_shardings=data,
    **options,
  )
  variables = (trainable, non_trainable)
  return {
    'train': (train, (state, batch)),
    'eval': (evaluate, (variables, images)),
    'predict': (predict, (variables, images['image'])),
  }


def compile_all(
  config, target, on_step=None, steps=('train', 'eval', 'predict')
) -> dict:
  """Compiles the named Keras steps for `target`; {step: report}, as
  aot_steps'."""
  images = aot_steps.images_per_device(config, len(target.devices))
  chosen = {k: v for k, v in step_inputs(config, target).items() if k in steps}
  dtype = aot_steps.compute_dtype(config, target)
  return compile_reports.compile_steps(chosen, target, dtype, images, on_step)


def main(argv) -> None:
  """Entry point of `python -m sharp_unet_jax.benchmarks.keras_aot`."""
  del argv
  jax.config.update('jax_platforms', 'cpu')
  config = FLAGS.config
  target = targets.parse(FLAGS.target)
  reports = compile_all(
    config,
    target,
    on_step=lambda name, r: print(aot.describe(f'{name} (Keras 3 on JAX)', r)),
    steps=FLAGS.steps,
  )
  summary = {'target': FLAGS.target, 'config': FLAGS['config'].config_filename}
  summary['steps'] = reports
  print(json.dumps(summary), flush=True)


if __name__ == '__main__':
  aot.define_flags()
  cli.run(main)
