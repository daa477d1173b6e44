"""Data augmentation on device, inside the jitted train step.

Per example, with the settings of `config.augment` (configs/default.py):

- geometry: horizontal and vertical flips, multiples of 90 degrees (square
  inputs only; skipped otherwise), a small affine map (rotation, isotropic
  scale, shift) and the U-Net paper's elastic deformation: random
  displacements on a coarse `elastic_grid` x `elastic_grid` (3 x 3) grid of
  nodes spanning the image, Gaussian with `elastic_sigma` (10) px std,
  interpolated to every pixel by bicubic (Keys) interpolation;
- intensity: brightness (an added offset), contrast (a factor around the
  image mean) and gamma, then clipped to [0, 1].

All geometric parts are composed into one map from output to source pixel
coordinates, and every array is resampled once with
`jax.scipy.ndimage.map_coordinates` and mirrored borders ('reflect', the
U-Net way of extrapolating context): order 1 (bilinear) for the image,
order 0 (nearest) for the mask and the loss weights. Image, mask and weights
therefore get the same warp, and the mask stays a label map with the same
class values. With all settings off the map is the identity and the
resampling exact.

Randomness is a function of (config.seed, step): the step's key is
`fold_in(fold_in(key(seed), stream), step)`, split into one key per example
of the global batch. A run is reproducible, a resumed run sees the same
augmentations as an uninterrupted one, and the result does not depend on the
number of devices.

Where it runs, and why: on the accelerator, inside the train step, not in
tf.data. The input pipeline is numpy indexing of arrays held in memory
(`input_pipeline.train_batch`), keyed by (seed, step) for exact resume, so
keeping augmentation a pure function of the same key in the same jitted step
keeps that property for free; it adds no host work, no extra transfers (the
batch is already on device) and no per-process TF graph to keep in step.
Measured with `python -m sharp_unet_jax.benchmarks.augment_benchmark
--config=configs/default.py` (CPU, 2 cores, 1 device; global batch
16 x 64 x 64 x 3, Sharp U-Net with 16 filters; medians of 5 alternating
rounds; every augmentation on, elastic included): augmentation alone 5.3 ms
per batch against 169 ms per train step (3 %); inside the jitted step it
added 0.7 ms (0.4 %, within noise). Compiling the train step took 6.5-7.1 s
with augmentation against 4.9-5.0 s without. At 3 % of a step there is nothing to win
by moving it to host threads, and much to lose (determinism, a second
pipeline to keep in step with the (seed, step) order).
"""

import math

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

from sharp_unet_jax.compilation import meshes

# Mixed into the seed so augmentation draws differ from parameter init draws.
_STREAM = 0x6175676D


def step_key(seed, step) -> jax.Array:
  """The augmentation key of training step `step` (traceable in both)."""
  base = jax.random.fold_in(jax.random.key(seed), _STREAM)
  return jax.random.fold_in(base, step)


def elastic_displacement(key, height: int, width: int, grid: int, sigma: float):
  """Smooth displacement field (2, H, W): coarse Gaussian nodes, bicubic.

  The `grid` x `grid` nodes sit on the image corners, edge midpoints, ...,
  evenly spaced; each node's (dy, dx) is N(0, sigma^2) pixels.
  """
  nodes = sigma * jax.random.normal(key, (2, grid, grid), jnp.float32)
  scale = jnp.array([(height - 1) / (grid - 1), (width - 1) / (grid - 1)])
  return jax.image.scale_and_translate(
    nodes,
    (2, height, width),
    spatial_dims=(1, 2),
    scale=scale,
    translation=0.5 - 0.5 * scale,
    method='cubic',
    antialias=False,
  )


def _uniform(key, bound: float):
  return jax.random.uniform(key, (), jnp.float32, -bound, bound)


def _linear_part(keys, height: int, width: int, cfg) -> jax.Array:
  """2x2 map from output to source offsets: flips, 90-degree turns, affine."""
  matrix = jnp.eye(2, dtype=jnp.float32)
  if cfg.flip:
    signs = jnp.where(jax.random.bernoulli(keys[0], 0.5, (2,)), -1.0, 1.0)
    matrix = jnp.diag(signs) @ matrix
  if cfg.rot90 and height == width:
    turns = jax.random.randint(keys[1], (), 0, 4)
    cos = jnp.array([1.0, 0.0, -1.0, 0.0])[turns]
    sin = jnp.array([0.0, 1.0, 0.0, -1.0])[turns]
    matrix = jnp.array([[cos, -sin], [sin, cos]]) @ matrix
  if cfg.rotation_degrees:
    angle = _uniform(keys[2], math.radians(cfg.rotation_degrees))
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    matrix = jnp.array([[cos, -sin], [sin, cos]]) @ matrix
  if cfg.scale:
    zoom = jnp.exp(_uniform(keys[3], math.log1p(cfg.scale)))
    matrix = matrix / zoom
  return matrix


def source_coordinates(key, height: int, width: int, cfg) -> jax.Array:
  """Source (row, column) coordinates (2, H, W) of every output pixel."""
  keys = jax.random.split(key, 6)
  centre = jnp.array([(height - 1) / 2.0, (width - 1) / 2.0], jnp.float32)
  rows, cols = jnp.meshgrid(
    jnp.arange(height, dtype=jnp.float32),
    jnp.arange(width, dtype=jnp.float32),
    indexing='ij',
  )
  offsets = jnp.stack([rows, cols]) - centre[:, None, None]
  if cfg.elastic_sigma:
    offsets = offsets + elastic_displacement(
      keys[4], height, width, cfg.elastic_grid, cfg.elastic_sigma
    )
  matrix = _linear_part(keys, height, width, cfg)
  source = jnp.einsum('ij,jhw->ihw', matrix, offsets) + centre[:, None, None]
  if cfg.shift:
    sides = jnp.array([height, width], jnp.float32)
    shift = jax.random.uniform(keys[5], (2,), jnp.float32, -cfg.shift, cfg.shift)
    source = source + (shift * sides)[:, None, None]
  return source


def warp(array: jax.Array, coordinates: jax.Array, order: int) -> jax.Array:
  """Resamples (H, W) or (H, W, C) `array` at `coordinates` (2, H, W)."""

  def one_channel(channel):
    return ndimage.map_coordinates(
      channel, [coordinates[0], coordinates[1]], order=order, mode='reflect'
    )

  if array.ndim == 2:
    return one_channel(array)
  return jax.vmap(one_channel, in_axes=-1, out_axes=-1)(array)


def adjust_intensity(key, image: jax.Array, cfg) -> jax.Array:
  """Brightness, contrast and gamma of one float image in [0, 1]."""
  keys = jax.random.split(key, 3)
  if cfg.brightness:
    image = image + _uniform(keys[0], cfg.brightness)
  if cfg.contrast:
    factor = 1.0 + _uniform(keys[1], cfg.contrast)
    mean = jnp.mean(image)
    image = (image - mean) * factor + mean
  image = jnp.clip(image, 0.0, 1.0)
  if cfg.gamma:
    image = image ** jnp.exp(_uniform(keys[2], cfg.gamma))
  return image


def augment_example(key, example: dict, cfg) -> dict:
  """Augments one example {'image': (H, W, C), 'mask': (H, W)[, 'weights']}."""
  geometry_key, intensity_key = jax.random.split(key)
  height, width = example['image'].shape[:2]
  coordinates = source_coordinates(geometry_key, height, width, cfg)
  out = dict(example)
  out['image'] = adjust_intensity(
    intensity_key, warp(example['image'], coordinates, order=1), cfg
  ).astype(example['image'].dtype)
  for name in ('mask', 'weights'):
    if name in example:
      out[name] = warp(example[name], coordinates, order=0)
  return out


def augment_batch(batch: dict, key: jax.Array, cfg) -> dict:
  """Augments every example of a (global) batch; other entries pass through.

  Args:
    batch: 'image' (N, H, W, C) float in [0, 1], 'mask' (N, H, W) int and
      optionally 'weights' (N, H, W) float.
    key: the step's key (`step_key`).
    cfg: config.augment.

  Returns:
    The batch with image, mask and weights augmented.
  """
  examples = {n: batch[n] for n in ('image', 'mask', 'weights') if n in batch}
  keys = jax.random.split(key, batch['image'].shape[0])

  def augment_all(keys, examples):
    return jax.vmap(lambda k, ex: augment_example(k, ex, cfg))(keys, examples)

  # A batch sharded over a mesh axis is augmented shard by shard, each device
  # its own examples with their global keys (the result does not depend on
  # the number of devices).
  sharding = meshes.batch_sharding(batch['image'])
  if sharding is not None:
    keys = jax.sharding.reshard(keys, sharding)
    augment_all = meshes.shard_over_batch(augment_all, sharding, batched=(True, True))
  return {**batch, **augment_all(keys, examples)}
