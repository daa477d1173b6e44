"""The largest tile batch whose compiled tile forward fits a memory budget.

Overlap-tile inference (evaluation/inference.py) runs one compiled function
per tile shape; its memory grows with the tiles per call. `tile_report`
compiles that function for a tile batch (abstract inputs: nothing runs)
through compile_reports and reads XLA's memory analysis of it; `auto_tile_batch`
searches for the largest tile batch within a budget on the devices at hand,
for `predict --tile_batch=auto`, and falls back to a fixed batch where the
backend gives no memory analysis or the device memory is unknown."""

from typing import Optional, Sequence

from absl import logging
import jax
from jax.sharding import NamedSharding, PartitionSpec

from sharp_unet_jax.compilation import batch_search, budgets, compile_reports, meshes
from sharp_unet_jax.evaluation import inference

FALLBACK = 4  # tiles per call where no memory analysis is available
AUTO_LIMIT = 32  # most tiles per device that auto tries


def tile_report(
  forward, params, tile_size: Sequence[int], channels: int, tile_batch: int, mesh
) -> dict:
  """Compiles `forward` (inference.tile_forward) for `tile_batch` tiles.

  Args:
    forward: the jitted tile function.
    params: parameter arrays or their shapes (jax.ShapeDtypeStruct).
    tile_size: (height, width) of a tile.
    channels: the model's input channels.
    tile_batch: tiles per call, over all of the mesh's devices.
    mesh: the ('data',) mesh the tiles are split over.

  Returns:
    {'peak_bytes': per-device peak or None, 'compile_s', and 'error' if the
    compiler refused, or 'no_memory_analysis': True where it gives none}.
  """
  replicated = NamedSharding(mesh, PartitionSpec())
  tiles = NamedSharding(mesh, PartitionSpec(meshes.AXIS))
  height, width = tile_size
  args = (
    jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), params
    ),
    jax.ShapeDtypeStruct(
      (tile_batch, height, width, channels), 'float32', sharding=tiles
    ),
    jax.ShapeDtypeStruct((height, width), 'float32', sharding=replicated),
  )
  _, program, seconds = compile_reports.compile_step(forward, args)
  report = {'compile_s': round(seconds, 2)}
  if isinstance(program, str):
    return {**report, 'peak_bytes': None, 'error': program}
  try:
    peak = compile_reports.memory(program).get('peak_bytes')
  except Exception:  # noqa: BLE001  a backend without memory analysis
    peak = None
  if peak is None:
    report['no_memory_analysis'] = True
  return {**report, 'peak_bytes': peak}


def auto_tile_batch(
  apply_fn,
  params,
  *,
  num_classes: int,
  tile_size: Sequence[int],
  channels: int,
  tta: str,
  mesh,
  budget: Optional[int] = None,
) -> int:
  """The most tiles per call (a multiple of the mesh's devices, at most
  AUTO_LIMIT per device) whose compiled forward fits `budget`, on the
  devices of `mesh`; FALLBACK (rounded up to a multiple of the devices)
  where the memory cannot be known. The choice is logged.

  Args:
    apply_fn, num_classes, tta: as inference.TiledPredictor takes them.
    params: the model parameters.
    tile_size: (height, width) of a tile.
    channels: the model's input channels.
    mesh: the ('data',) mesh of the devices at hand.
    budget: peak bytes per device; None: budgets.DEFAULT_FRACTION of the
      device's memory.
  """
  devices = mesh.size
  fallback = -(-FALLBACK // devices) * devices
  if budget is None:
    memory = budgets.device_memory_bytes(list(mesh.devices.flat))
    if memory is None:
      logging.warning('--tile_batch=auto: device memory unknown; using %d.', fallback)
      return fallback
    budget = int(budgets.DEFAULT_FRACTION * memory)
  forward = inference.tile_forward(apply_fn, num_classes, tta, mesh)
  reports = {}

  def measure(per_device: int) -> dict:
    if per_device not in reports:
      reports[per_device] = tile_report(
        forward, params, tile_size, channels, per_device * devices, mesh
      )
    return reports[per_device]

  if measure(fallback // devices).get('no_memory_analysis'):
    logging.warning(
      '--tile_batch=auto: this backend gives no memory analysis; using %d.', fallback
    )
    return fallback
  result = batch_search.search(measure, budget, fallback // devices, AUTO_LIMIT)
  if result.best is None:
    logging.warning(
      '--tile_batch=auto: not even %d tiles (one per device) fit %.3f GiB per '
      'device by XLA memory analysis; using %d.',
      devices,
      budget / budgets.GIB,
      devices,
    )
    return devices
  _log_choice(result, devices, budget)
  return result.best.batch * devices


def _log_choice(result, devices: int, budget: int) -> None:
  """Logs the tile batch `result` chose, its peak and the candidates compiled."""
  logging.info(
    '--tile_batch=auto: chose tile_batch=%d (%d per device; XLA peak %.3f GiB '
    'of a %.3f GiB budget per device; %d candidates compiled%s).',
    result.best.batch * devices,
    result.best.batch,
    result.best.peak_bytes / budgets.GIB,
    budget / budgets.GIB,
    len(result.candidates),
    f', capped at {AUTO_LIMIT} per device' if result.capped else '',
  )
