"""Plans the batch that fits: compiles a config's train step (and its tile
forward) at candidate batches for a target and keeps the largest that fits.

Each candidate is the Trainer's own train step, compiled for the target's
mesh by training/aot_steps.py (no data, nothing runs), so its peak is XLA's memory
analysis of the program training would run there: the compiler's figure,
exact for that program. Images/s is aot's estimate from the chip's published
peaks: high on GPU (every kernel at a peak), either way on TPU (on-chip bytes
charged at HBM bandwidth; no step at the peaks). Reports are cached on disk
(report_cache.py), keyed by the config (at the candidate's batch and dtype),
target, compiler versions and this package's source.
"""

import dataclasses
import functools
import time
from typing import Callable, Optional, Sequence

import jax
import ml_collections

from sharp_unet_jax.compilation import batch_search, report_cache, targets
from sharp_unet_jax.evaluation import inference
from sharp_unet_jax.model import models
from sharp_unet_jax.training import aot_steps, tile_batch

DEFAULT_LIMIT = 1024  # most images (or tiles) per device a search tries
_KEPT = ('compile_s', 'est_step_ms', 'est_images_per_sec_per_device', 'error')


@dataclasses.dataclass
class Planner:
  """Compiles candidates of one config for one target, through a cache.

  Attributes:
    config: the training config (left unchanged: candidates are copies).
    target: where to compile for.
    cache: the report cache (a ReportCache(None) caches nothing).
    on_candidate: called with (kind, dtype, candidate, at most how many
      more) after each candidate; its details hold 'cached' and 'elapsed_s'.
    on_compile: called with (kind, dtype, batch, seconds elapsed) before a
      candidate that is not in the cache is compiled.
  """

  config: ml_collections.ConfigDict
  target: targets.Target
  cache: report_cache.ReportCache
  on_candidate: Optional[Callable] = None
  on_compile: Optional[Callable] = None

  @property
  def devices(self) -> int:
    return len(self.target.devices)

  def variant(self, dtype: str, batch_per_device: Optional[int] = None):
    """A copy of the config at `dtype` (and a per-device train batch)."""
    config = self.config.copy_and_resolve_references()
    config.dtype = dtype
    if batch_per_device is not None:
      config.batch_size = batch_per_device * self.devices
    return config

  def _cached(self, key: dict, compile_fn, announce=None) -> tuple[dict, bool]:
    report = self.cache.get(key)
    if report is not None:
      return report, True
    if announce is not None:
      announce()
    report = compile_fn()
    self.cache.put(key, report)
    return report, False

  def train_report(
    self, dtype: str, batch_per_device: int, announce=None
  ) -> tuple[dict, bool]:
    """(report of the train step at this batch and dtype, from the cache?)."""
    config = self.variant(dtype, batch_per_device)
    key = report_cache.make_key(
      kind='train',
      config=config.to_json_best_effort(sort_keys=True),
      target=self.target.spec,
      batch_per_device=batch_per_device,
      dtype=dtype,
    )

    def compile_train() -> dict:
      full = aot_steps.compile_all(config, self.target, steps=('train',))['train']
      report = {k: full[k] for k in _KEPT if k in full}
      report['peak_bytes'] = full.get('peak_bytes')
      return report

    return self._cached(key, compile_train, announce)

  def tile_report(
    self, dtype: str, tile_size: Sequence[int], tiles_per_device: int, announce=None
  ) -> tuple[dict, bool]:
    """(report of the tile forward at this tile batch and dtype, cached?)."""
    config = self.variant(dtype)
    key = report_cache.make_key(
      kind='predict_tiles',
      config=config.to_json_best_effort(sort_keys=True),
      target=self.target.spec,
      tile_size=list(tile_size),
      tiles_per_device=tiles_per_device,
      dtype=dtype,
    )

    def compile_tiles() -> dict:
      tiles = config.copy_and_resolve_references()
      tiles.image_size = tuple(tile_size)
      model = models.create_model(tiles, self.target.platform, self.target.devices[0])
      params = jax.eval_shape(
        lambda: models.init_params(model, config, jax.random.key(0))
      )
      forward = inference.tile_forward(
        lambda p, x: model.apply({'params': p}, x),
        config.num_classes,
        'none',
        self.target.mesh(),
      )
      return tile_batch.tile_report(
        forward,
        params,
        tile_size,
        config.num_channels,
        tiles_per_device * self.devices,
        self.target.mesh(),
      )

    return self._cached(key, compile_tiles, announce)

  def _search(self, kind: str, dtype: str, report_fn, budget, start, limit):
    began = time.perf_counter()

    def measure(batch: int) -> dict:
      def announce():
        if self.on_compile is not None:
          self.on_compile(kind, dtype, batch, time.perf_counter() - began)

      report, cached = report_fn(batch, announce)
      return {**report, 'cached': cached, 'elapsed_s': time.perf_counter() - began}

    def progress(candidate, left):
      if self.on_candidate is not None:
        self.on_candidate(kind, dtype, candidate, left)

    return batch_search.search(measure, budget, start, limit, progress)

  def plan_train(self, dtype: str, budget: int, limit: int = DEFAULT_LIMIT):
    """The largest per-device train batch within `budget` (a search Result),
    starting from the config's own batch."""
    start = max(1, self.config.batch_size // self.devices)
    return self._search(
      'train', dtype, functools.partial(self.train_report, dtype), budget, start, limit
    )

  def plan_tiles(
    self, dtype: str, tile_size: Sequence[int], budget: int, limit: int = DEFAULT_LIMIT
  ):
    """The largest tiles per device within `budget` (a search Result)."""
    return self._search(
      'predict',
      dtype,
      functools.partial(self.tile_report, dtype, tile_size),
      budget,
      max(1, tile_batch.FALLBACK // self.devices),
      limit,
    )
