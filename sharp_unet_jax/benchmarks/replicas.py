r"""Times the vmapped trainer of seeds (training/replicas.py) against one
replica after another.

Speed, measured with `python -m sharp_unet_jax.benchmarks.replicas
--config=configs/default.py --replicas=5` (`benchmark`: compiled steps,
medians of 3 alternating rounds of 5 steps; CPU, 2 cores, 1 device, the
default config, batch 16 of 64 x 64): one vmapped step of the 5 replicas
took 4410 ms, 5 single-replica steps one after another 866 ms, so vmap was
5x SLOWER (speed-up x0.20). Vmapping a convolution over stacked kernels
turns it into a grouped convolution (feature_group_count = replicas), which
XLA's CPU backend runs far slower than the plain convolutions of one
replica; on CPU, train the seeds one after another. The mode is meant for
accelerators, where a model this small leaves most of the chip idle and
grouped convolutions are fast; rerun `benchmark` there before relying on it
(not measured here: no GPU was available).
"""

import functools

import jax
import jax.numpy as jnp

from sharp_unet_jax.benchmarks import timing
from sharp_unet_jax.compilation import xla_options
from sharp_unet_jax.data import input_pipeline
from sharp_unet_jax.training import losses, replicas, steps


def _single_replica(config, trainer):
  """The jitted train step and initialisation of one replica, unvmapped."""
  single_step = jax.jit(
    functools.partial(
      steps.train_step,
      loss_fn=losses.get_loss(config.loss),
      num_classes=config.num_classes,
    ),
    compiler_options=trainer.compiler_options,
  )
  create = jax.jit(
    functools.partial(steps.create_train_state, config, trainer.model),
    compiler_options=xla_options.init_options(trainer.platform),
  )
  return single_step, create


def benchmark(config, num_replicas: int, num_steps: int = 10, repeats: int = 3):
  """Seconds per step of all replicas: vmapped vs one replica after another.

  Both are compiled first; the two ways are timed in alternation (`repeats`
  rounds of `num_steps` steps each) and the medians compared, so that load
  from other processes hits both alike.

  Returns:
    {'vmap_s': s per vmapped step of R replicas, 'sequential_s': s for R
     single-replica steps, 'speedup': sequential_s / vmap_s, 'replicas': R}.
  """
  config = config.copy_and_resolve_references()
  seeds = list(range(num_replicas))
  configs = replicas.seed_configs(config, seeds)
  trainer = replicas.ReplicaTrainer(configs[0])
  single_step, create = _single_replica(config, trainer.trainer)
  data = input_pipeline.load_split(config, config.train_split)
  batches = [
    replicas.stack([input_pipeline.train_batch(data, c, step) for c in configs])
    for step in range(num_steps)
  ]
  seed_array = jnp.asarray(seeds, jnp.int32)
  # The train steps donate their states: each way keeps its own.
  vmapped = [trainer.init(seed_array)]
  singles = [create(jax.random.key(s)) for s in seeds]

  def run_vmap():
    for batch in batches:
      vmapped[0], _ = trainer.train_step(vmapped[0], batch, seed_array)
    return vmapped[0]

  def run_sequential():
    for batch in batches:
      for k in range(num_replicas):
        one = {key: value[k] for key, value in batch.items()}
        singles[k], _ = single_step(singles[k], one)
    return singles

  medians = timing.alternating_medians(
    {'vmap': run_vmap, 'sequential': run_sequential}, repeats
  )
  vmap_s = medians['vmap'] / num_steps
  sequential_s = medians['sequential'] / num_steps
  return {
    'replicas': num_replicas,
    'vmap_s': vmap_s,
    'sequential_s': sequential_s,
    'speedup': sequential_s / vmap_s,
    'device': jax.devices()[0].device_kind,
  }


def main(argv) -> None:
  """Prints `benchmark` for --config and --replicas."""
  from absl import flags  # noqa: PLC0415

  flags_ = flags.FLAGS
  del argv  # cli.run refuses positional arguments.
  result = benchmark(flags_.config, flags_.replicas, flags_.steps, flags_.repeats)
  print(
    f'{result["replicas"]} replicas on {result["device"]}: vmap '
    f'{result["vmap_s"] * 1e3:.0f} ms per step of all replicas, sequential '
    f'{result["sequential_s"] * 1e3:.0f} ms; speed-up x{result["speedup"]:.2f}'
  )


if __name__ == '__main__':
  from absl import flags  # noqa: PLC0415

  from sharp_unet_jax import cli  # noqa: PLC0415

  timing.define_round_flags(steps=10, repeats=3)
  flags.DEFINE_integer('replicas', 5, 'Number of seeds trained at once.')
  cli.run(main)
