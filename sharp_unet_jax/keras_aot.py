r"""The paper's Keras model, on Keras 3's JAX back end, compiled for a target.

  python -m sharp_unet_jax.keras_aot --config=configs/isic.py --target=tpu:v5e:2x2

Compiles one train step of `keras_reference.build_keras_unet` (the paper's
layers, Adam(1e-3, eps 1e-7), cross-entropy) and one of ours for the same
target, batch sharding and dtype-free float32 setting, and prints both
summaries and the ratio of their estimated images/s (ours / Keras). Like
`aot`, every figure is a compiler estimate (see aot_steps.py). Keras picks its
back end when it is first imported, so this is a program of its own that sets
KERAS_BACKEND=jax before anything imports Keras.
"""

import os

os.environ['KERAS_BACKEND'] = 'jax'

import json  # noqa: E402

from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from sharp_unet_jax import aot, cli  # noqa: E402
from sharp_unet_jax.compilation import targets  # noqa: E402
from sharp_unet_jax.training import aot_steps, train  # noqa: E402

FLAGS = flags.FLAGS


def keras_train_step(model, optimizer):
  """A pure (state, batch) -> (state, loss) train step of a Keras model."""
  import keras  # noqa: PLC0415

  def step(state, batch):
    trainable, non_trainable, optimizer_vars = state

    def compute_loss(variables):
      logits, new_non_trainable = model.stateless_call(
        variables, non_trainable, batch['image'], training=True
      )
      labels = batch['mask'][..., None].astype(jnp.float32)
      loss = keras.losses.binary_crossentropy(labels, logits, from_logits=True)
      return jnp.mean(loss), new_non_trainable

    (loss, non_trainable), grads = jax.value_and_grad(compute_loss, has_aux=True)(
      trainable
    )
    trainable, optimizer_vars = optimizer.stateless_apply(
      optimizer_vars, grads, trainable
    )
    return (trainable, non_trainable, optimizer_vars), loss

  return step


def keras_report(config, target, trainer) -> dict:
  """Compiles the Keras model's train step for the target; its summary."""
  import keras  # noqa: PLC0415

  from sharp_unet_jax.interop import keras_reference  # noqa: PLC0415

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
  replicated = trainer.replicated

  def abstract(variables):
    return [
      jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=replicated) for v in variables
    ]

  state = tuple(
    abstract(v)
    for v in (
      model.trainable_variables,
      model.non_trainable_variables,
      optimizer.variables,
    )
  )
  batch = aot_steps.abstract_batch(
    config, trainer.data_sharding, config.batch_size, False
  )
  step = jax.jit(
    keras_train_step(model, optimizer),
    in_shardings=(replicated, trainer.data_sharding),
    out_shardings=replicated,
    donate_argnums=(0,),
  )
  lowered, compiled, seconds = aot_steps.compile_step(step, (state, batch))
  if isinstance(compiled, str):
    return {'compiled': False, 'compile_s': round(seconds, 2), 'error': compiled}
  images = config.batch_size // trainer.mesh.size
  report = aot_steps.summarize(lowered, compiled, target, config, images)
  return {'compiled': True, 'compile_s': round(seconds, 2), **report}


def main(argv) -> None:
  """Entry point of `python -m sharp_unet_jax.keras_aot`."""
  del argv
  jax.config.update('jax_platforms', 'cpu')
  config = FLAGS.config
  target = targets.parse(FLAGS.target)
  trainer = train.Trainer(config, target.mesh())
  fn, args = aot_steps.step_inputs(trainer)['train']
  lowered, compiled, seconds = aot_steps.compile_step(fn, args)
  images = config.batch_size // trainer.mesh.size
  ours = {'compiled': True, 'compile_s': round(seconds, 2)}
  ours.update(aot_steps.summarize(lowered, compiled, target, config, images))
  keras_step = keras_report(config, target, trainer)
  print(aot.describe('train (ours)', ours))
  print(aot.describe('train (Keras 3 on JAX)', keras_step))
  ratio = None
  if keras_step.get('est_images_per_sec_per_device'):
    ratio = (
      ours['est_images_per_sec_per_device']
      / keras_step['est_images_per_sec_per_device']
    )
  print(
    f'estimated images/s, ours / Keras: {ratio if ratio is None else f"{ratio:.2f}"}'
  )
  summary = {'target': FLAGS.target, 'config': FLAGS['config'].config_filename}
  summary.update(ours=ours, keras=keras_step, est_ratio_ours_over_keras=ratio)
  print(json.dumps(summary))


if __name__ == '__main__':
  aot.define_flags()
  cli.run(main)
