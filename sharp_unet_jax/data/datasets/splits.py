"""Deterministic splits of a data set's example ids.

Two protocols, both pure functions of the set of ids (never of the order in
which files were listed or created):

* `standard_split`: train / validation / test, 70 / 10 / 20 %. Ids are ordered
  by a salted SHA-256 hash of the id, then cut into three parts of fixed size,
  so an id's split does not depend on the platform or the Python hash seed.
  `ordered_split` cuts the sorted ids instead (for slices of one volume, where
  neighbours look alike and must not straddle splits).
* `paper_split`: the Sharp U-Net paper's protocol, paper_train / paper_test,
  80 / 20 %. It equals scikit-learn's
  `train_test_split(sorted(ids), test_size=0.2, shuffle=True,
  random_state=seed)`: a `np.random.RandomState(seed)` permutation of the
  sorted ids, its first ceil(0.2 n) ids being the test part. The paper used
  that 20 % both for validation (early stopping) and as the test set, so the
  protocol has no independent test set: use it only to compare with the
  paper.
"""

import hashlib
import math
from typing import Iterable

import numpy as np

from sharp_unet_jax.errors import BadDataError

STANDARD_SPLITS = ('train', 'validation', 'test')
# Fractions of the standard splits, in the order of STANDARD_SPLITS.
STANDARD_FRACTIONS = (0.7, 0.1, 0.2)
# Fraction of the paper's test part.
PAPER_TEST_FRACTION = 0.2
# Salt of the hash that orders ids in `standard_split`.
_SALT = 'sharp_unet_jax/v1'


def _sorted_unique(ids: Iterable[str]) -> list[str]:
  ids = list(ids)
  unique = sorted(set(ids))
  if len(unique) != len(ids):
    raise ValueError('Example ids must be unique.')
  return unique


def _standard_sizes(n: int, dataset: str) -> tuple[int, int, int]:
  """Returns the sizes of train, validation and test; each at least 1."""
  if n < 3:
    raise BadDataError(
      f'{dataset}: only {n} example(s) found; train, validation and test need '
      'at least 3'
    )
  validation = max(1, math.floor(STANDARD_FRACTIONS[1] * n + 0.5))
  test = max(1, math.floor(STANDARD_FRACTIONS[2] * n + 0.5))
  return n - validation - test, validation, test


def _cut(ids: list[str], sizes) -> dict[str, list[str]]:
  splits, start = {}, 0
  for name, size in zip(STANDARD_SPLITS, sizes):
    splits[name] = sorted(ids[start : start + size])
    start += size
  return splits


def standard_split(ids: Iterable[str], dataset: str = '') -> dict[str, list[str]]:
  """Splits ids 70 / 10 / 20 % into train, validation and test by hash.

  Args:
    ids: unique example ids.
    dataset: the data set's name, for messages.

  Returns:
    Sorted ids of each split, keyed by split name.

  Raises:
    BadDataError: fewer than 3 ids.
  """
  ids = _sorted_unique(ids)
  sizes = _standard_sizes(len(ids), dataset)

  def key(id_: str) -> str:
    return hashlib.sha256(f'{_SALT}/{id_}'.encode()).hexdigest()

  return _cut(sorted(ids, key=key), sizes)


def ordered_split(ids: Iterable[str], dataset: str = '') -> dict[str, list[str]]:
  """Splits sorted ids 70 / 10 / 20 %: the first ones train, the last test.

  Raises:
    BadDataError: fewer than 3 ids.
  """
  ids = _sorted_unique(ids)
  return _cut(ids, _standard_sizes(len(ids), dataset))


def paper_split(
  ids: Iterable[str], seed: int = 42, dataset: str = ''
) -> dict[str, list[str]]:
  """Splits ids 80 / 20 % into paper_train and paper_test like the paper.

  Args:
    ids: unique example ids.
    seed: `random_state` of the paper's `train_test_split` (42; 0 for the
      COVID-19 set).
    dataset: the data set's name, for messages.

  Returns:
    Sorted ids of paper_train and paper_test.

  Raises:
    BadDataError: fewer than 2 ids.
  """
  ids = _sorted_unique(ids)
  n = len(ids)
  if n < 2:
    raise BadDataError(
      f'{dataset}: only {n} example(s) found; the paper split needs at least 2'
    )
  num_test = math.ceil(PAPER_TEST_FRACTION * n)  # As scikit-learn rounds.
  order = np.random.RandomState(seed).permutation(n)
  return {
    'paper_train': sorted(ids[i] for i in order[num_test:]),
    'paper_test': sorted(ids[i] for i in order[:num_test]),
  }
