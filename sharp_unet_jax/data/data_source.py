"""Random access to a prepared TFDS split, one preprocessed example at a time.

The builders write `array_record` files (datasets/common.py: FILE_FORMAT),
which `builder.as_data_source(split)` reads by example index. Nothing of a
split is held in memory: `Split.read(indices)` decodes, resizes and converts
just those examples, in worker threads (TensorFlow's kernels and scipy's
distance transforms run outside the GIL). Decoding and resizing are the same
TensorFlow ops that `tf.data` ran before (tf.image.resize, bilinear for
images with rounding and clipping, nearest neighbour for masks), applied to
one example, so the values are the same.
"""

from concurrent import futures
import functools
import os
from typing import Callable, Iterator, Optional, Sequence

from absl import logging
import jax
import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import tensorflow_datasets as tfds  # noqa: E402

from sharp_unet_jax.compilation import kv_store  # noqa: E402
from sharp_unet_jax.data import channels, datasets  # noqa: E402,F401  (registers the builders)
from sharp_unet_jax.data.datasets import common  # noqa: E402
from sharp_unet_jax.errors import UserError  # noqa: E402

_RAW = tfds.decode.DeserializeMethod.RAW_BYTES


def _create_builder(config):
  """The builder of config.dataset reading (or writing) array_record files."""
  try:
    return tfds.builder(
      config.dataset, data_dir=config.data_dir, file_format=common.FILE_FORMAT
    )
  except tfds.core.registered.DatasetNotFoundError as e:
    raise UserError(
      f'config.dataset={config.dataset!r} is not a known TFDS data set; '
      'use one of the builders in sharp_unet_jax/data/datasets.'
    ) from e
  except ValueError as e:
    if 'File format is already set' not in str(e):
      raise
    old = tfds.builder(config.dataset, data_dir=config.data_dir, file_format='tfrecord')
    folder = old.data_dir
    raise UserError(
      f'{folder} holds {config.dataset} in an older record format; the input '
      f'pipeline reads {common.FILE_FORMAT} (random access). Delete that folder '
      'and run again to rebuild it (or rebuild it with python -m '
      'sharp_unet_jax.data.datasets.build).'
    ) from e


def get_builder(config):
  """Returns the TFDS builder of `config.dataset`, prepared (built) on disk.

  Process 0 builds the data set while the others wait at a barrier; every
  process then opens the builder anew, so that it sees the splits just built.

  Raises:
    UserError: if the data set is unknown or was built in the old format.
  """
  if jax.process_index() == 0:
    builder = _create_builder(config)
    download_config = tfds.download.DownloadConfig(manual_dir=config.manual_dir)
    builder.download_and_prepare(download_config=download_config)
  kv_store.barrier('tfds_prepared')  # the others wait for process 0's build
  return _create_builder(config)


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


@functools.lru_cache(maxsize=None)
def tensorflow():
  """TensorFlow, imported when a run first needs it (a decoder, a summary
  writer): programs that never read data (aot, plan) skip its seconds of
  import. It only feeds data and writes summaries, so it is kept off the
  GPUs that JAX should own."""
  import tensorflow as tf  # noqa: PLC0415

  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TensorFlow started before this call: too late
    logging.warning('TensorFlow was started before it could be kept off the GPUs.')
  return tf


def _make_decoder(features, size: Sequence[int], instances: bool):
  """A compiled TF function: serialized example -> resized features."""
  tf = tensorflow()

  @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
  def decode(record):
    example = features.deserialize_example(record)
    image = example['image']
    dtype = image.dtype
    image = tf.image.resize(image, size, method='bilinear')
    out = {
      'image': tf.cast(tf.clip_by_value(tf.round(image), 0, dtype.max), dtype),
      'mask': tf.cast(
        tf.image.resize(example['mask'], size, 'nearest')[..., 0], tf.uint8
      ),
      'id': example.get('id', tf.constant(b'')),
    }
    if instances:
      objects = tf.image.resize(example['instances'], size, 'nearest')
      out['instances'] = tf.cast(objects[..., 0], tf.int32)
    return out

  return decode.get_concrete_function()


@functools.lru_cache(maxsize=None)
def _worker_pool(workers: int) -> futures.ThreadPoolExecutor:
  """The threads that read examples; shared by the splits of a process."""
  return futures.ThreadPoolExecutor(workers, thread_name_prefix='input')


class Split:
  """A TFDS split read by example index at the config's image size.

  `read(indices)` returns a dict of stacked numpy arrays: 'image' (N, H, W, C)
  uint8 or uint16, 'mask' (N, H, W) uint8, 'id' (N,) bytes, and 'instances'
  (N, H, W) int32 and 'weights' (N, H, W) float32 when asked for.
  """

  def __init__(self, config, builder, split: str, instances: bool = False):
    self.name = f'{config.dataset}[{split}]'
    self._records = builder.as_data_source(split, deserialize_method=_RAW)
    self._channels = config.num_channels
    self._num_labels = max(config.num_classes, 2)
    self._config = config
    self.has_instances = instances and 'instances' in builder.info.features
    self._decode = _make_decoder(
      builder.info.features, tuple(config.image_size), self.has_instances
    )
    self._weights: Optional[Callable] = None
    self._pool = _worker_pool(int(config.get('input_workers', 4)))

  def __len__(self) -> int:
    return len(self._records)

  def with_weights(self, weight_fn: Callable) -> 'Split':
    """Adds 'weights' = weight_fn(mask, instances or None) to every example.

    Returns:
      This split (changed in place).
    """
    self._weights = weight_fn
    return self

  def example(self, index: int) -> dict:
    """Example `index`, preprocessed; its mask values checked."""
    out = {k: v.numpy() for k, v in self._decode(self._records[int(index)]).items()}
    out['image'] = channels.to_channels(out['image'], self._channels)
    if out['mask'].max(initial=0) >= self._num_labels:
      ident = out['id'].decode('utf-8', 'replace')
      where = f'{self.name} example {ident!r} (index {index})'
      check_mask_values(out['mask'], self._config, where)
    if self._weights is not None:
      out['weights'] = self._weights(out['mask'], out.get('instances'))
    return out

  def read(self, indices) -> dict:
    """The examples at `indices`, stacked; decoded in the worker threads."""
    examples = list(self._pool.map(self.example, np.asarray(indices).tolist()))
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}

  def iterate(self, batch_size: int, indices=None) -> Iterator[dict]:
    """Reads `indices` (default: all, in order) a batch at a time."""
    indices = np.arange(len(self)) if indices is None else np.asarray(indices)
    for start in range(0, len(indices), batch_size):
      yield self.read(indices[start : start + batch_size])


def examples(builder, split: str, decoders=None) -> Iterator[dict]:
  """Every example of a prepared split as stored, decoded by TFDS's decoders.

  For tests and tools that look at a whole (small) split as stored.

  Args:
    builder: a prepared builder.
    split: a split name or expression ('train+test').
    decoders: TFDS decoders per feature (tfds.decode.SkipDecoding()).
  """
  features, tf = builder.info.features, tensorflow()
  for record in builder.as_data_source(split, deserialize_method=_RAW):
    example = features.deserialize_example(tf.constant(record), decoders=decoders)
    yield tfds.as_numpy(example)


def stacked(builder, split: str) -> dict:
  """A whole (small) split as stored, each feature stacked into one array."""
  items = list(examples(builder, split))
  return {key: np.stack([item[key] for item in items]) for key in items[0]}
