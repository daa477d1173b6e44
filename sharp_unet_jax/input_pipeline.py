"""TFDS -> per-process numpy batches -> global jax.Arrays.

Each split is read once through TFDS, resized to the config's image size
(bilinear for images, nearest neighbour for masks) and kept in host memory.
The training batch of step `s` is then a pure function of (seed, s): the
examples come from a seeded permutation per epoch, so a run resumed from any
checkpoint sees exactly the batches an uninterrupted run would have seen.

Every process computes the same global batch indices and loads its own
contiguous share of them; `jax.make_array_from_process_local_data` assembles
the global, data-sharded batch.
"""

import dataclasses
import functools
import os
from typing import Iterator, Optional

import jax
import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from sharp_unet_jax import datasets  # noqa: E402,F401  (registers the builders)
from sharp_unet_jax.errors import UserError  # noqa: E402

# TensorFlow only feeds data: keep it off accelerators JAX should own.
tf.config.set_visible_devices([], 'GPU')


@dataclasses.dataclass(frozen=True)
class SplitData:
  """A split held in host memory at the model's input size.

  Attributes:
    images: (N, H, W, C) uint8 or uint16, C = config.num_channels.
    masks: (N, H, W) uint8 class indices.
    ids: (N,) example ids, as bytes, when the data set has them.
    instances: optional (N, H, W) int32 instance ids (0 = background), read
      when asked for and the data set has them (dsb2018).
    weights: optional (N, H, W) float32 per-pixel loss weights (see
      weight_map.py); training batches carry them as 'weights'.
  """

  images: np.ndarray
  masks: np.ndarray
  ids: np.ndarray
  instances: Optional[np.ndarray] = None
  weights: Optional[np.ndarray] = None

  def __len__(self) -> int:
    return len(self.images)


def get_builder(config):
  """Returns the TFDS builder of `config.dataset`, prepared (built) on disk.

  Raises:
    UserError: if the data set is unknown.
  """
  try:
    builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise UserError(
      f'config.dataset={config.dataset!r} is not a known TFDS data set; '
      'use one of the builders in sharp_unet_jax/datasets.'
    ) from e
  if jax.process_index() == 0:
    download_config = tfds.download.DownloadConfig(manual_dir=config.manual_dir)
    builder.download_and_prepare(download_config=download_config)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415

    multihost_utils.sync_global_devices('tfds_prepared')
  return builder


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
  """Converts (N, H, W, C) images to `channels` channels.

  Grey is repeated to RGB, an alpha channel is dropped, and RGB becomes grey
  by the ITU-R 601 luma weights.
  """
  have = images.shape[-1]
  if have == channels:
    return images
  if have == 4:
    images, have = images[..., :3], 3
  if have == channels:
    return images
  if have == 1 and channels == 3:
    return np.repeat(images, 3, axis=-1)
  if have == 3 and channels == 1:
    luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.round(luma)[..., None].astype(images.dtype)
  raise UserError(f'Cannot convert images with {have} channels to {channels}.')


def load_split(config, split: str, instances: bool = False) -> SplitData:
  """Reads a whole split through TFDS at config.image_size.

  Args:
    config: the training config.
    split: the TFDS split name.
    instances: also read the `instances` feature (nearest-neighbour resized)
      when the data set has one.

  Raises:
    UserError: for a missing split, or mask values that do not fit
      config.num_classes.
  """
  builder = get_builder(config)
  if split not in builder.info.splits:
    raise UserError(
      f'Split {split!r} does not exist in {config.dataset}; it has '
      f'{sorted(builder.info.splits.keys())}.'
    )
  height, width = config.image_size
  instances = instances and 'instances' in builder.info.features

  def resize(example):
    image = example['image']
    dtype = image.dtype
    image = tf.image.resize(image, (height, width), method='bilinear')
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, dtype.max), dtype)
    mask = tf.image.resize(example['mask'], (height, width), method='nearest')
    ids = example.get('id', tf.constant(b''))
    if instances:
      objects = tf.image.resize(example['instances'], (height, width), 'nearest')
      ids = (ids, tf.cast(objects[..., 0], tf.int32))
    return image, tf.cast(mask[..., 0], tf.uint8), ids

  ds = builder.as_dataset(split=split, shuffle_files=False)
  ds = ds.map(resize, num_parallel_calls=tf.data.AUTOTUNE).batch(256)
  images, masks, ids, objects = [], [], [], []
  for image, mask, ident in tfds.as_numpy(ds):
    if instances:
      ident, instance_ids = ident
      objects.append(instance_ids)
    images.append(image)
    masks.append(mask)
    ids.append(ident)
  data = SplitData(
    to_channels(np.concatenate(images), config.num_channels),
    np.concatenate(masks),
    np.concatenate(ids),
    np.concatenate(objects) if instances else None,
  )
  check_mask_values(data.masks, config, f'{config.dataset}[{split}]')
  return data


def check_mask_values(masks: np.ndarray, config, source: str) -> None:
  """Raises UserError if masks hold a class index the model cannot predict."""
  num_labels = max(config.num_classes, 2)
  found = np.unique(masks)
  bad = found[found >= num_labels]
  if bad.size:
    raise UserError(
      f'{source}: mask values {found.tolist()} do not fit num_classes='
      f'{config.num_classes} (expected 0..{num_labels - 1}); fix the data or '
      'set --config.num_classes.'
    )


def normalize(images: np.ndarray) -> np.ndarray:
  """Scales integer images to float32 in [0, 1] by their dtype's maximum."""
  return images.astype(np.float32) / float(np.iinfo(images.dtype).max)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def train_indices(seed: int, step: int, batch_size: int, num_examples: int):
  """Global example indices of training step `step`: a function of its args.

  Examples are visited in a fresh seeded permutation each epoch; a batch may
  straddle two epochs.
  """
  positions = step * batch_size + np.arange(batch_size)
  epochs, offsets = np.divmod(positions, num_examples)
  return np.array(
    [_epoch_permutation(seed, int(e), num_examples)[o] for e, o in zip(epochs, offsets)]
  )


def process_slice(global_size: int) -> slice:
  """The contiguous part of a global batch that this process loads."""
  local = global_size // jax.process_count()
  start = jax.process_index() * local
  return slice(start, start + local)


def check_batch_size(
  batch_size: int, key: str = 'batch_size', num_devices: Optional[int] = None
) -> None:
  """Raises UserError unless `batch_size` divides evenly over the devices.

  Args:
    batch_size: a global batch size.
    key: the config key it comes from, for the message.
    num_devices: devices of the mesh it is split over; None: every device.
  """
  devices = len(jax.devices()) if num_devices is None else num_devices
  if batch_size <= 0 or batch_size % devices:
    raise UserError(
      f'config.{key}={batch_size} must be a positive multiple of the number '
      f'of devices ({devices}); set --config.{key} accordingly.'
    )


def make_global_batch(local: dict, sharding) -> dict:
  """Assembles per-process numpy arrays into global arrays sharded over data."""
  return {
    key: jax.make_array_from_process_local_data(sharding, value)
    for key, value in local.items()
  }


def train_batch(data: SplitData, config, step: int) -> dict:
  """This process's share of the training batch at `step`, as numpy arrays."""
  indices = train_indices(config.seed, step, config.batch_size, len(data))
  indices = indices[process_slice(config.batch_size)]
  batch = {
    'image': normalize(data.images[indices]),
    'mask': data.masks[indices].astype(np.int32),
  }
  if data.weights is not None:
    batch['weights'] = data.weights[indices].astype(np.float32)
  return batch


def eval_batches(data: SplitData, batch_size: int) -> Iterator[dict]:
  """Yields this process's share of padded evaluation batches, in order.

  The last batch is padded with copies of the first example; 'valid' is 1 for real
  examples and 0 for padding, so every example counts exactly once.
  """
  for start in range(0, len(data), batch_size):
    indices = np.arange(start, start + batch_size)
    valid = indices < len(data)
    indices = np.where(valid, indices, 0)[process_slice(batch_size)]
    yield {
      'image': normalize(data.images[indices]),
      'mask': data.masks[indices].astype(np.int32),
      'valid': valid[process_slice(batch_size)].astype(np.float32),
    }
