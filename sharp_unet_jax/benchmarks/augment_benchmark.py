r"""Measures what on-device augmentation costs against the train step.

  python -m sharp_unet_jax.benchmarks.augment_benchmark --config=configs/default.py \
      [--steps=20] [--repeats=5]

Three compiled functions on one global batch of the config, timed in
alternation (`repeats` rounds of `steps` calls each; medians), so that load
from other processes hits all alike:

- augment: `augment.augment_batch` alone, all augmentations on;
- train step: the train step without augmentation;
- train step + augment: the train step with augmentation inside it.

The cost of augmentation is (train step + augment) - (train step), reported
also as a fraction of the train step.
"""

import functools

import jax

from sharp_unet_jax.benchmarks import timing
from sharp_unet_jax.data import augment, input_pipeline
from sharp_unet_jax.training import train


def benchmark(config, steps: int = 20, repeats: int = 5) -> dict:
  """Returns median seconds per call of augment, train step and both."""
  plain = config.copy_and_resolve_references()
  plain.augment.enabled = False
  augmented = config.copy_and_resolve_references()
  augmented.augment.enabled = True
  trainer = train.Trainer(plain)
  trainer_augmented = train.Trainer(augmented)
  data = input_pipeline.load_split(config, config.train_split)
  batch = trainer.global_batch(input_pipeline.train_batch(data, config, 0))
  key = augment.step_key(config.seed, 0)
  augment_only = jax.jit(
    functools.partial(augment.augment_batch, cfg=augmented.augment)
  )
  # The train steps donate their state: each keeps its own.
  states = {'plain': trainer.initial_state(), 'augmented': trainer.initial_state()}

  def step(name, step_fn):
    states[name], metrics = step_fn(states[name], batch)
    return metrics

  calls = {
    'augment': lambda: augment_only(batch, key),
    'train_step': lambda: step('plain', trainer.train_step),
    'train_step_with_augment': lambda: step('augmented', trainer_augmented.train_step),
  }
  result = timing.alternating_medians(calls, repeats, steps)
  result['augment_in_step'] = result['train_step_with_augment'] - result['train_step']
  result['fraction_of_step'] = result['augment_in_step'] / result['train_step']
  result['device'] = jax.devices()[0].device_kind
  result['batch'] = list(batch['image'].shape)
  return result


def main(argv) -> None:
  """Entry point of `python -m sharp_unet_jax.benchmarks.augment_benchmark`."""
  from absl import flags  # noqa: PLC0415

  values = flags.FLAGS
  del argv  # cli.run refuses positional arguments.
  result = benchmark(values.config, values.steps, values.repeats)
  print(
    f'{result["device"]}, batch {result["batch"]}: augment alone '
    f'{result["augment"] * 1e3:.1f} ms, train step {result["train_step"] * 1e3:.1f} '
    f'ms, train step with augment {result["train_step_with_augment"] * 1e3:.1f} '
    f'ms: augmentation adds {result["augment_in_step"] * 1e3:.1f} ms '
    f'({100 * result["fraction_of_step"]:.1f} % of a step).'
  )


if __name__ == '__main__':
  from sharp_unet_jax import cli  # noqa: PLC0415

  timing.define_round_flags(steps=20, repeats=5)
  cli.run(main)
