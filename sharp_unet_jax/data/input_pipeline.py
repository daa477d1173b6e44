"""Training and evaluation batches read by example index, as global jax.Arrays.

A split is opened as a `data_source.Split`: random access to the prepared
TFDS data on disk, each example decoded and resized when it is read, so host
memory holds a few batches, never the split. The training batch of step `s`
is a pure function of (seed, s): the examples come from a seeded permutation
per epoch, so a run resumed from any checkpoint sees exactly the batches an
uninterrupted run would have seen.

Every process computes the same global batch indices and reads only its own
contiguous share of them; `jax.make_array_from_process_local_data` assembles
the global, data-sharded batch (see prefetch.py, which does it for the next
batch while the current step runs).
"""

import dataclasses
import functools
from typing import Iterator, Optional

import jax
import numpy as np

from sharp_unet_jax.data import data_source, folds, weight_map
from sharp_unet_jax.data.data_source import (  # noqa: F401
  check_mask_values,
  get_builder,
)
from sharp_unet_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class SplitData:
  """A small split held in host memory (tests, tools); reads like a Split.

  Attributes:
    images: (N, H, W, C) uint8 or uint16.
    masks: (N, H, W) uint8 class indices.
    ids: (N,) example ids, as bytes.
    instances: optional (N, H, W) int32 instance ids (0 = background).
    weights: optional (N, H, W) float32 per-pixel loss weights.
  """

  images: np.ndarray
  masks: np.ndarray
  ids: np.ndarray
  instances: Optional[np.ndarray] = None
  weights: Optional[np.ndarray] = None

  def __len__(self) -> int:
    return len(self.images)

  def read(self, indices) -> dict:
    """The examples at `indices`, with the keys of `data_source.Split.read`."""
    out = {'image': self.images[indices], 'mask': self.masks[indices]}
    out['id'] = (
      self.ids[indices] if len(self.ids) else np.array([b''] * len(out['mask']))
    )
    for key in ('instances', 'weights'):
      if getattr(self, key) is not None:
        out[key] = getattr(self, key)[indices]
    return out

  def iterate(self, batch_size: int, indices=None) -> Iterator[dict]:
    """Reads `indices` (default: all, in order) a batch at a time."""
    indices = np.arange(len(self)) if indices is None else np.asarray(indices)
    for start in range(0, len(indices), batch_size):
      yield self.read(indices[start : start + batch_size])


def load_split(config, split: str, instances: bool = False) -> data_source.Split:
  """Opens a split of config.dataset for reading at config.image_size.

  Args:
    config: the training config.
    split: the TFDS split name, or a fold of folds.py.
    instances: also read the `instances` feature (nearest-neighbour resized)
      when the data set has one.

  Raises:
    UserError: for a missing split. Mask values that do not fit
      config.num_classes are reported when their example is read.
  """
  if folds.parse(split) is not None:  # A cross-validation fold (folds.py).
    return folds.load(config, split, instances)
  builder = get_builder(config)
  if split not in builder.info.splits:
    raise UserError(
      f'Split {split!r} does not exist in {config.dataset}; it has '
      f'{sorted(builder.info.splits.keys())}.'
    )
  return data_source.Split(config, builder, split, instances)


def load_train_split(config):
  """config.train_split; with config.weight_map, its examples carry the
  U-Net weight map as 'weights' (computed from the instances, when any)."""
  if not config.get('weight_map', False):
    return load_split(config, config.train_split)
  data = load_split(config, config.train_split, instances=True)
  return weight_map.split_weight_maps(data, config)


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


def train_batch(data, config, step: int) -> dict:
  """This process's share of the training batch at `step`, as numpy arrays."""
  indices = train_indices(config.seed, step, config.batch_size, len(data))
  examples = data.read(indices[process_slice(config.batch_size)])
  batch = {
    'image': normalize(examples['image']),
    'mask': examples['mask'].astype(np.int32),
  }
  if 'weights' in examples:
    batch['weights'] = examples['weights'].astype(np.float32)
  return batch


def eval_indices(num_examples: int, batch_size: int) -> Iterator[tuple]:
  """(indices, valid) of this process's share of each padded eval batch.

  The last batch is padded with copies of the first example; valid is True
  for real examples and False for padding.
  """
  for start in range(0, num_examples, batch_size):
    indices = np.arange(start, start + batch_size)
    valid = indices < num_examples
    indices = np.where(valid, indices, 0)
    yield indices[process_slice(batch_size)], valid[process_slice(batch_size)]


def eval_batches(data, batch_size: int) -> Iterator[dict]:
  """Yields this process's share of padded evaluation batches, in order.

  'valid' is 1 for real examples and 0 for padding, so every example counts
  exactly once.
  """
  for indices, valid in eval_indices(len(data), batch_size):
    examples = data.read(indices)
    yield {
      'image': normalize(examples['image']),
      'mask': examples['mask'].astype(np.int32),
      'valid': valid.astype(np.float32),
    }
