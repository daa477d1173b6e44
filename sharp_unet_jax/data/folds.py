"""K-fold cross-validation splits over a pool of TFDS splits, fixed by example id.

A fold split is named like a TFDS split, so a training config can point
`train_split` or `eval_split` at it and `input_pipeline.load_split` opens it:

  cv[train+validation]:fold0of5:train      every example of the pool but fold 0
  cv[train+validation]:fold0of5:held_out   fold 0 only

Folds come from the example ids alone: the ids of the pool are ordered by
the SHA-256 of the id and dealt out in turn (rank mod K), so every fold has
the same size to within one, and the folds do not depend on the order of the
files, on a seed, or on any other split. The test split is never in a pool
that the experiment (experiment/cv.py) builds, so it takes part in no choice.
"""

import hashlib
import re

import numpy as np
import tensorflow_datasets as tfds

from sharp_unet_jax.data import data_source
from sharp_unet_jax.errors import UserError

PARTS = ('train', 'held_out')
_PATTERN = re.compile(
  r'^cv\[(?P<pool>[^\]]+)\]:fold(?P<fold>\d+)of(?P<folds>\d+):(?P<part>train|held_out)$'
)


def split_name(pool: str, fold: int, folds: int, part: str) -> str:
  """The name of part `part` of fold `fold` of `folds` over `pool`."""
  if part not in PARTS:
    raise ValueError(f'part must be one of {PARTS}, got {part!r}.')
  return f'cv[{pool}]:fold{fold}of{folds}:{part}'


def parse(split: str):
  """(pool, fold, folds, part) of a fold split's name, or None for another name.

  Raises:
    UserError: for a fold number outside [0, folds) or fewer than 2 folds.
  """
  match = _PATTERN.match(str(split))
  if not match:
    return None
  fold, folds = int(match['fold']), int(match['folds'])
  if folds < 2 or not 0 <= fold < folds:
    raise UserError(f'Split {split!r}: need 2 or more folds and 0 <= fold < folds.')
  return match['pool'], fold, folds, match['part']


def assign(ids, folds: int) -> np.ndarray:
  """The fold of each id: ids ordered by SHA-256, dealt out in turn.

  Raises:
    UserError: for repeated ids or fewer ids than folds.
  """
  keys = [i if isinstance(i, bytes) else str(i).encode('utf-8') for i in ids]
  if len(set(keys)) != len(keys):
    raise UserError('Example ids repeat; folds are fixed from unique ids.')
  if len(keys) < folds:
    raise UserError(f'{len(keys)} examples cannot fill {folds} folds.')
  order = sorted(range(len(keys)), key=lambda i: hashlib.sha256(keys[i]).hexdigest())
  result = np.empty(len(keys), np.int64)
  result[order] = np.arange(len(keys)) % folds
  return result


_IDS: dict = {}


def pool_ids(builder, pool: str) -> tuple:
  """The example ids of a pool of splits, in the pool's order (cached)."""
  key = (builder.info.full_name, str(builder.data_dir), pool)
  if key not in _IDS:
    features = builder.info.features
    if 'id' not in features:
      raise UserError(f'{builder.info.full_name} has no example ids; folds need them.')
    skip = {k: tfds.decode.SkipDecoding() for k in features if k != 'id'}
    examples = data_source.examples(builder, pool, decoders=skip)
    _IDS[key] = tuple(e['id'] for e in examples)
  return _IDS[key]


class FoldSplit:
  """A part of a fold: a view of the pool's Split at some of its indices."""

  def __init__(self, base, indices, name: str):
    self._base = base
    self.indices = np.asarray(indices, np.int64)
    self.name = name
    self.has_instances = base.has_instances

  def __len__(self) -> int:
    return len(self.indices)

  def with_weights(self, weight_fn):
    """Adds weight maps to every example (see data_source.Split)."""
    self._base.with_weights(weight_fn)
    return self

  def read(self, indices) -> dict:
    """The examples at `indices` of this part."""
    return self._base.read(self.indices[np.asarray(indices, np.int64)])

  def iterate(self, batch_size: int, indices=None):
    """Reads `indices` (default: all, in order) a batch at a time."""
    indices = np.arange(len(self)) if indices is None else np.asarray(indices)
    for start in range(0, len(indices), batch_size):
      yield self.read(indices[start : start + batch_size])


def load(config, split: str, instances: bool = False) -> FoldSplit:
  """Opens a fold split (see the module docstring) at the config's image size.

  Raises:
    UserError: for a malformed name or a pool split the data set lacks.
  """
  parsed = parse(split)
  if parsed is None:
    raise UserError(f'{split!r} is not a fold split name (cv[POOL]:foldIofK:PART).')
  pool, fold, folds, part = parsed
  builder = data_source.get_builder(config)
  missing = [s for s in pool.split('+') if s not in builder.info.splits]
  if missing:
    raise UserError(
      f'Split {split!r}: {config.dataset} has no split {missing[0]!r}; it has '
      f'{sorted(builder.info.splits.keys())}.'
    )
  ids = pool_ids(builder, pool)
  which = assign(ids, folds)
  indices = np.flatnonzero(which == fold if part == 'held_out' else which != fold)
  base = data_source.Split(config, builder, pool, instances)
  return FoldSplit(base, indices, f'{config.dataset}[{split}]')
