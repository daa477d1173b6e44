"""The U-Net paper's per-pixel loss weights for separating touching objects.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 sigma**2))

(Ronneberger et al. 2015, eq. 2), with w0 = 10 and sigma = 5 px by default:

- d1 and d2 are the distances from pixel x to the nearest and the second
  nearest object (Euclidean, in pixels of the model's input size);
- the border term is added to background pixels only (inside an object d1
  is 0 and the term would weight object interiors instead of the gaps between
  objects), and only when the image has at least two objects;
- w_c balances class frequencies: class c gets
  total_pixels / (num_present_classes * pixels_of_c), counted over the whole
  training split, so the mean of w_c over all pixels is 1 (with
  `balance=False` it is 1 everywhere).

Objects are the instance labels when the data set has them (dsb2018's
`instances` feature: one id per nucleus), else the connected components of
each foreground class (4-connectivity, `scipy.ndimage.label`).

The maps are computed on the host in numpy (one exact distance transform per
object) when an example is read, in the input's worker threads, and travel
in the batches as 'weights'; the losses take them as their per-pixel
`weights` argument.
"""

import dataclasses
import functools
from typing import Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
from scipy import ndimage


def object_labels(mask: np.ndarray, instances: Optional[np.ndarray] = None):
  """Integer object ids (H, W), 0 for background.

  Args:
    mask: (H, W) class indices.
    instances: optional (H, W) instance ids (0 = none); used when given.

  Returns:
    int32 ids: the instance ids, or the connected components of each
    foreground class numbered one class after the other.
  """
  if instances is not None:
    return np.asarray(instances, np.int32)
  labels = np.zeros(mask.shape, np.int32)
  offset = 0
  for c in np.unique(mask):
    if c == 0:
      continue
    components, count = ndimage.label(mask == c)
    labels[components > 0] = components[components > 0] + offset
    offset += count
  return labels


def border_term(
  objects: np.ndarray, w0: float = 10.0, sigma: float = 5.0
) -> np.ndarray:
  """w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) on background pixels, 0 elsewhere.

  Args:
    objects: (H, W) object ids, 0 for background.
    w0: weight at a zero-width gap.
    sigma: width of the border band, in pixels.

  Returns:
    float32 (H, W); all zero when there are fewer than two objects.
  """
  ids = np.unique(objects)
  ids = ids[ids != 0]
  if len(ids) < 2:
    return np.zeros(objects.shape, np.float32)
  nearest = np.full(objects.shape, np.inf)
  second = np.full(objects.shape, np.inf)
  for i in ids:
    distance = ndimage.distance_transform_edt(objects != i)
    second = np.minimum(second, np.maximum(nearest, distance))
    nearest = np.minimum(nearest, distance)
  term = w0 * np.exp(-((nearest + second) ** 2) / (2.0 * sigma**2))
  return np.where(objects == 0, term, 0.0).astype(np.float32)


def _balance(counts: np.ndarray) -> np.ndarray:
  """w_c from pixel counts per class: total / (present classes * count), so
  that the mean weight is 1; 0 for classes that never occur."""
  counts = np.asarray(counts, np.float64)
  present = counts > 0
  weights = np.zeros_like(counts)
  weights[present] = counts.sum() / (present.sum() * counts[present])
  return weights.astype(np.float32)


def weight_map(
  mask: np.ndarray,
  class_weight: np.ndarray,
  instances: Optional[np.ndarray] = None,
  w0: float = 10.0,
  sigma: float = 5.0,
) -> np.ndarray:
  """The U-Net weight map of one image: w_c(x) + the border term.

  Args:
    mask: (H, W) class indices.
    class_weight: w_c per class (`split_class_weights`; ones to switch it off).
    instances: optional (H, W) instance ids; else connected components.
    w0: border weight.
    sigma: border width, in pixels.

  Returns:
    float32 (H, W).
  """
  base = np.asarray(class_weight, np.float32)[mask]
  return base + border_term(object_labels(mask, instances), w0, sigma)


def split_class_weights(data, config, batch_size: int = 64) -> np.ndarray:
  """w_c of a split from its pixel frequencies (float32, one per class of
  max(num_classes, 2)), its masks read a batch at a time.

  On several processes each counts the pixels of its share of the examples
  and the counts are summed, so every process gets the same weights.
  """
  num_labels = max(config.num_classes, 2)
  if not config.weight_map_balance:
    return np.ones(num_labels, np.float32)
  mine = np.arange(jax.process_index(), len(data), jax.process_count())
  counts = np.zeros(num_labels, np.int64)
  for batch in data.iterate(batch_size, mine):
    counts += np.bincount(batch['mask'].reshape(-1), minlength=num_labels)
  if jax.process_count() > 1:
    counts = np.asarray(multihost_utils.process_allgather(counts)).sum(axis=0)
  return _balance(counts)


def split_weight_maps(data, config):
  """Returns `data` whose examples carry their U-Net weight map as 'weights'.

  `data` is a data_source.Split (maps computed when an example is read, never
  held for the split) or an in-memory input_pipeline.SplitData (maps
  computed now). Uses the instances when the split has them. Class weights
  come from this split's masks when config.weight_map_balance, else they
  are 1.
  """
  balance = split_class_weights(data, config)
  make = functools.partial(
    weight_map,
    class_weight=balance,
    w0=config.weight_map_w0,
    sigma=config.weight_map_sigma,
  )
  logging.info('U-Net weight maps with class weights %s.', np.round(balance, 3))
  if hasattr(data, 'with_weights'):
    return data.with_weights(lambda mask, instances: make(mask, instances=instances))
  instances = getattr(data, 'instances', None)
  maps = np.stack(
    [
      make(mask, instances=None if instances is None else instances[i])
      for i, mask in enumerate(data.masks)
    ]
  )
  return dataclasses.replace(data, weights=maps)
