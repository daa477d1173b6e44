r"""How big a batch fits? Finds it by compiling, for a target or this machine.

  python -m sharp_unet_jax.plan --config=configs/isic.py --target=tpu:v5e:2x2 \
      [--memory_limit_gib=12] [--dtypes=float32,bfloat16] [--tile_size=192,256] \
      [--max_batch=1024] [--cache_dir=DIR] [--config.KEY=VALUE ...]

TARGET: any `aot` target (tpu:v5e:2x2, tpu:v4:2x2x1, gpu:h100:4, cpu:4) or
`local`, this machine's own devices. For each dtype it compiles the config's
train step at candidate per-device batches, from the config's own batch
upwards (at least doubling) to the first that exceeds the budget, then
bisects (training/planning.py, compilation/batch_search.py), and keeps the
largest batch whose peak per device is within the budget: 90 % of the
device's memory, or --memory_limit_gib. With --tile_size, it does the same
for the tiles per call of `predict` (--tile_batch).

Peak memory is the compiler's figure for the program (XLA's memory analysis);
images/s is a roofline estimate from the chip's published peaks, an upper
bound. The config is never changed: the plan prints the flags to pass. It
prints each candidate as it is compiled, a table, the flags, and one JSON
object as the last line. Compile reports are cached on disk (--cache_dir),
so a second run is quick. Exit status 2 with one `error:` line if no batch
fits the budget at any of the dtypes.
"""

import json

from absl import flags
import jax
from ml_collections import config_flags

from sharp_unet_jax import cli, predict
from sharp_unet_jax.compilation import budgets, report_cache
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.training import planning

FLAGS = flags.FLAGS


def _gib(value) -> str:
  return 'n/a' if value is None else f'{value / budgets.GIB:.3f}'


def _rate(candidate, devices: int) -> str:
  rate = candidate.details.get('est_images_per_sec_per_device')
  return 'n/a' if rate is None else f'{rate * devices:,.0f}'


def progress_printers():
  """Planner callbacks (on_candidate, on_compile) printing 'candidate n of at
  most m' after each candidate and a line before each compile."""
  counts = {}

  def show(kind, dtype, candidate, left) -> None:
    n = counts[kind, dtype] = counts.get((kind, dtype), 0) + 1
    d = candidate.details
    source = 'cached' if d.get('cached') else f'compiled in {d.get("compile_s")} s'
    verdict = 'fits' if candidate.fits else 'over budget'
    if candidate.peak_bytes is None:
      verdict = f'refused: {d.get("error", "no memory analysis")}'
    print(
      f'[{kind} {dtype}] candidate {n} of at most {n + left}: {candidate.batch} '
      f'per device, peak {_gib(candidate.peak_bytes)} GiB, {verdict} ({source}; '
      f'{d["elapsed_s"]:.0f} s elapsed)',
      flush=True,
    )

  def compiling(kind, dtype, batch, elapsed) -> None:
    n = counts.get((kind, dtype), 0) + 1
    print(
      f'[{kind} {dtype}] candidate {n}: compiling {batch} per device '
      f'({elapsed:.0f} s elapsed) ...',
      flush=True,
    )

  return show, compiling


def table(kind: str, result, devices: int) -> str:
  """The candidates of one search, smallest batch first."""
  unit = 'images' if kind == 'train' else 'tiles'
  lines = [
    f'| {unit}/device | {unit}/call | peak GiB/device | fits | est. images/s '
    '| compile |',
    '|---|---|---|---|---|---|',
  ]
  for c in sorted(result.candidates, key=lambda c: c.batch):
    compile_s = 'cached' if c.details.get('cached') else f'{c.details["compile_s"]} s'
    lines.append(
      f'| {c.batch} | {c.batch * devices} | {_gib(c.peak_bytes)} | '
      f'{"yes" if c.fits else "no"} | {_rate(c, devices)} | {compile_s} |'
    )
  return '\n'.join(lines)


def verdict(dtype: str, result, devices: int, config_batch: int) -> str:
  """The flags to pass, and whether the config's own batch fits."""
  if result.best is None:
    return f'{dtype}: no train batch fits: 1 image per device needs more.'
  best, over = result.best, result.first_misfit
  text = (
    f'{dtype}: the largest train batch that fits is {best.batch} per device '
    f'(peak {_gib(best.peak_bytes)} GiB): pass --config.batch_size='
    f'{best.batch * devices} --config.dtype={dtype}'
  )
  if over is not None:
    text += f' ({over.batch} per device: {_gib(over.peak_bytes)} GiB, over)'
  if result.capped:
    text += f' (the search stopped at --max_batch={best.batch}; more may fit)'
  own = next((c for c in result.candidates if c.batch * devices == config_batch), None)
  if config_batch % devices:
    text += (
      f".\n  The config's batch_size={config_batch} does not divide over "
      f'{devices} devices.'
    )
  elif own is not None:
    fits = 'fits' if own.fits else 'DOES NOT FIT'
    text += f".\n  The config's own batch_size={config_batch} {fits} at {dtype} "
    text += f'(peak {_gib(own.peak_bytes)} GiB).'
  return text


def summary_of(result, devices: int) -> dict:
  """One search as JSON."""
  best = result.best
  return {
    'batch_per_device': best.batch if best else None,
    'batch': best.batch * devices if best else None,
    'peak_bytes': best.peak_bytes if best else None,
    'capped': result.capped,
    'candidates': [
      {
        'batch_per_device': c.batch,
        'peak_bytes': c.peak_bytes,
        'fits': c.fits,
        **c.details,
      }
      for c in result.candidates
    ],
  }


def main(argv) -> None:
  """Entry point of `python -m sharp_unet_jax.plan`."""
  del argv  # cli.run refuses positional arguments
  if FLAGS.target != 'local':  # compile-only devices; see targets.py
    jax.config.update('jax_platforms', 'cpu')
  config, target = FLAGS.config, budgets.resolve(FLAGS.target)
  devices = len(target.devices)
  budget = budgets.budget_bytes(target, FLAGS.memory_limit_gib)
  memory = budgets.device_memory_bytes(target.devices, target.chip)
  print(
    f'{FLAGS.target}: {devices} x {target.devices[0].device_kind}; budget '
    f'{_gib(budget)} GiB per device (of {_gib(memory)} GiB). Peaks are the '
    "compiler's memory analysis; images/s (all devices) is aot's estimate "
    'from published peaks, not a measurement: high on GPU (every kernel at '
    'a peak), either way on TPU.',
    flush=True,
  )
  cache = report_cache.ReportCache(FLAGS.cache_dir)
  planner = planning.Planner(config, target, cache, *progress_printers())
  summary = {'config': FLAGS['config'].config_filename, 'target': FLAGS.target}
  summary.update(devices=devices, device_memory_bytes=memory, budget_bytes=budget)
  summary['train'] = {}
  for dtype in FLAGS.dtypes:
    result = planner.plan_train(dtype, budget, FLAGS.max_batch)
    print(f'\ntrain step, {dtype}:\n{table("train", result, devices)}')
    print(verdict(dtype, result, devices, config.batch_size), flush=True)
    summary['train'][dtype] = summary_of(result, devices)
  if not any(s['batch'] for s in summary['train'].values()):
    raise UserError(
      f'No train batch fits {_gib(budget)} GiB per device on {FLAGS.target} at '
      f'{", ".join(FLAGS.dtypes)}: not even 1 image per device; raise '
      '--memory_limit_gib or use a smaller config (image_size, num_filters).'
    )
  if FLAGS.tile_size:
    _plan_tiles(planner, config, budget, devices, summary)
  print(json.dumps(summary), flush=True)


def _plan_tiles(planner, config, budget: int, devices: int, summary: dict) -> None:
  tile_size = predict.parse_tile_size(FLAGS.tile_size, config.image_size)
  summary['predict'] = {'tile_size': list(tile_size)}
  for dtype in FLAGS.dtypes:
    result = planner.plan_tiles(dtype, tile_size, budget, FLAGS.max_batch)
    print(f'\npredict, {"x".join(map(str, tile_size))} tiles, {dtype}:')
    print(table('predict', result, devices))
    best = result.best
    if best is None:
      print(f'{dtype}: not even 1 tile per device fits.')
    else:
      print(
        f'{dtype}: pass predict --tile_batch={best.batch * devices} '
        f'(peak {_gib(best.peak_bytes)} GiB per device)',
        flush=True,
      )
    summary['predict'][dtype] = summary_of(result, devices)


def define_flags() -> None:
  """The program's flags (only when run as a program)."""
  config_flags.DEFINE_config_file(
    'config', None, 'Training config file.', lock_config=True
  )
  flags.DEFINE_string(
    'target', None, "tpu:<topology>, gpu:<chip>:<count>, cpu:<n> or 'local'."
  )
  flags.DEFINE_float(
    'memory_limit_gib',
    None,
    "Peak GiB per device allowed; default 90 % of the device's.",
  )
  flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes to plan for.')
  flags.DEFINE_string(
    'tile_size', None, "Also plan predict's --tile_batch for 'SIDE' or 'H,W' tiles."
  )
  flags.DEFINE_integer(
    'max_batch',
    planning.DEFAULT_LIMIT,
    'Most images (tiles) per device to try.',
    lower_bound=1,
  )
  flags.DEFINE_string(
    'cache_dir',
    report_cache.default_dir(),
    "Where compile reports are cached; '' for none.",
  )
  flags.mark_flags_as_required(['config', 'target'])


if __name__ == '__main__':
  define_flags()
  cli.run(main)
