"""On-device augmentation: aligned warps, valid label maps, reproducible keys."""

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec
import ml_collections
import numpy as np
import pytest
from scipy import ndimage

from configs import default
from sharp_unet_jax.data import augment

SIZE = 128


def settings(**overrides) -> ml_collections.ConfigDict:
  cfg = default.get_config().augment
  cfg.update(enabled=True, **overrides)
  return cfg


GEOMETRY = dict(brightness=0.0, contrast=0.0, gamma=0.0, rotation_degrees=15.0)
ALL_OFF = dict(
  flip=False,
  rot90=False,
  rotation_degrees=0.0,
  scale=0.0,
  shift=0.0,
  elastic_sigma=0.0,
  brightness=0.0,
  contrast=0.0,
  gamma=0.0,
)


def smooth_images(count, channels=3, seed=0):
  """Smooth random images in [0, 1]: blobs that a 0.5 threshold cuts out."""
  rng = np.random.default_rng(seed)
  noise = rng.normal(size=(count, SIZE, SIZE, 1))
  field = ndimage.gaussian_filter(noise, sigma=(0, 12, 12, 0))
  field = (field - field.min()) / (field.max() - field.min())
  return np.repeat(field, channels, axis=-1).astype(np.float32)


def batch_of(images, masks, weights=None):
  batch = {'image': images, 'mask': masks.astype(np.int32)}
  if weights is not None:
    batch['weights'] = weights
  return batch


# Compiling at XLA's lowest optimisation level is several times faster on CPU
# and these batches are tiny; every setting below compiles once.
_FAST_COMPILE = {'xla_backend_optimization_level': 0}
_compiled = {}


def run(batch, key, name, **overrides):
  """Augments `batch` with settings `name` (compiled once per name)."""
  if name not in _compiled:
    cfg = settings(**overrides)
    _compiled[name] = jax.jit(
      lambda b, k: augment.augment_batch(b, k, cfg), compiler_options=_FAST_COMPILE
    )
  return jax.device_get(_compiled[name](batch, key))


def labelled(images):
  """Four classes cut from the first channel at 0.4, 0.5 and 0.6."""
  return np.digitize(images[..., 0], [0.4, 0.5, 0.6]).astype(np.int32)


def test_warp_keeps_image_and_mask_aligned_and_masks_label_maps():
  images = smooth_images(4)
  labels = labelled(images)
  weights = 0.5 + labels.astype(np.float32)
  out = run(
    batch_of(images, labels, weights), augment.step_key(0, 3), 'geometry', **GEOMETRY
  )
  assert not np.array_equal(out['mask'], labels)  # something moved
  for image, mask in zip(out['image'], out['mask']):
    agreement = np.mean((mask >= 2) == (image[..., 0] > 0.5))
    assert agreement >= 0.99
    # The check is sharp: a mask off by one pixel fails it.
    assert np.mean(np.roll(mask >= 2, 1, axis=0) == (image[..., 0] > 0.5)) < 0.99
  # Masks stay label maps with the same classes; weights get the same warp.
  assert out['mask'].dtype == np.int32
  assert set(np.unique(out['mask'])) <= {0, 1, 2, 3}
  np.testing.assert_array_equal(out['weights'], 0.5 + out['mask'])


def test_augmentation_is_a_function_of_seed_and_step():
  images = smooth_images(4)
  batch = batch_of(images, labelled(images))
  first = run(batch, augment.step_key(0, 7), 'all')
  again = run(batch, augment.step_key(0, 7), 'all')
  other_step = run(batch, augment.step_key(0, 8), 'all')
  other_seed = run(batch, augment.step_key(1, 7), 'all')
  np.testing.assert_array_equal(first['image'], again['image'])
  np.testing.assert_array_equal(first['mask'], again['mask'])
  assert not np.array_equal(first['image'], other_step['image'])
  assert not np.array_equal(first['image'], other_seed['image'])
  # Examples of one batch get different draws; intensities stay in [0, 1].
  assert not np.array_equal(first['image'][0], first['image'][1])
  assert first['image'].min() >= 0.0 and first['image'].max() <= 1.0

  # The same global batch spread over 4 devices gets the same augmentation,
  # shard by shard (explicit mesh axes) or as one program (auto axes).
  for axis_type in (AxisType.Explicit, AxisType.Auto):
    mesh = jax.make_mesh((jax.device_count(),), ('data',), axis_types=(axis_type,))
    sharded = jax.device_put(batch, NamedSharding(mesh, PartitionSpec('data')))
    spread = run(sharded, augment.step_key(0, 7), 'all')
    np.testing.assert_allclose(spread['image'], first['image'], atol=1e-6)
    np.testing.assert_array_equal(spread['mask'], first['mask'])


def dihedral_images(image):
  return [
    np.rot90(image, k)[::sy, ::sx] for k in range(4) for sy in (1, -1) for sx in (1, -1)
  ]


def test_flips_and_quarter_turns_are_exact_and_square_only():
  dihedral = dict(ALL_OFF, flip=True, rot90=True)
  images = smooth_images(4)
  out = run(
    batch_of(images, labelled(images)), augment.step_key(0, 0), 'dihedral', **dihedral
  )
  for image, moved in zip(images, out['image']):
    assert any(np.array_equal(moved, c) for c in dihedral_images(image))
  # Non-square: flips only (quarter turns would change the shape).
  wide = np.ascontiguousarray(images[:, :32])
  out = run(batch_of(wide, labelled(wide)), augment.step_key(0, 0), 'dihedral')
  for image, moved in zip(wide, out['image']):
    flips = [image[::sy, ::sx] for sy in (1, -1) for sx in (1, -1)]
    assert any(np.array_equal(moved, c) for c in flips)


def test_elastic_field_has_the_requested_node_std():
  keys = jax.random.split(jax.random.key(0), 200)
  fields = jax.jit(
    jax.vmap(lambda k: augment.elastic_displacement(k, 33, 33, 3, 10.0)),
    compiler_options=_FAST_COMPILE,
  )(keys)
  corners = np.asarray(fields[:, :, ::16, ::16])  # the 3 x 3 nodes
  assert np.std(corners) == pytest.approx(10.0, rel=0.1)
  # Smooth between the nodes: neighbouring pixels move alike.
  assert np.abs(np.diff(np.asarray(fields), axis=-1)).max() < 5.0
