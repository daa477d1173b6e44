r"""Pre-flight check: compiles a config's steps for a TPU slice or GPUs, here.

  python -m sharp_unet_jax.aot --config=configs/isic.py --target=tpu:v5e:2x2 \
      [--peer=keras] [--steps=train,predict] [--config.KEY=VALUE ...]

TARGET: tpu:<topology> (tpu:v5e:2x2, tpu:v4:2x2x1, tpu:v6e:2x2, ...),
gpu:<chip>:<count> (gpu:h100:4, gpu:a100:8) or cpu:<count>; see targets.py.
No TPU or GPU is needed: the compile-only devices come from the `libtpu` and
CUDA plugin wheels of requirements-aot.txt (set up by `make test` in
.venv-aot).

The init, train, eval and predict steps are built as training builds them,
for a ('data',) mesh over the target's devices, and compiled. Per step it
prints whether it compiled (or the compiler's error), the compile time,
per-device memory (arguments, outputs, temporaries, peak) against the
device's, FLOPs and bytes accessed, the collectives, the grouped
convolutions, and an estimate of step time and images/s per device from the
chip's published peaks: on TPU a roofline of XLA's cost analysis of the
optimised program, with `hbm_bytes_accessed` beside XLA's `bytes_accessed`
counting only the buffers in HBM (hbm_traffic.py); on GPU the kernel count,
bytes and FLOPs of the optimised program's kernels and a per-kernel roofline
(gpu_kernels.py). TPU and GPU figures are compiler estimates, not
measurements; `estimate_errs` says which way each errs. The last line is one
JSON object with all of it.

--peer=keras also compiles the paper's Keras model (Keras 3 on JAX) for the
same target, batch, dtype and optimiser, in a process of its own
(`python -m sharp_unet_jax.benchmarks.keras_aot`, so that Keras' back-end switch stays
out of this one), and prints, per step, estimated time ours/peer (lower is
better; timing.TIME_RATIO) with both programs' kernels and bytes; the JSON
gains `peer` (its reports), `ratio` (the convention) and
`steps.<train|eval|predict>.time_ours_over_peer`.

Exit status 2 with one `error:` line naming the config key when the config
cannot run there (batch not divisible over the devices, a step's peak memory
above the device's); 1 if a step does not compile.
"""

import json
import os
import subprocess
import sys
from typing import Optional

from absl import flags
import jax
from ml_collections import config_flags

from sharp_unet_jax import cli
from sharp_unet_jax.benchmarks import timing
from sharp_unet_jax.compilation import targets
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.training import aot_steps

FLAGS = flags.FLAGS


def _gib(value) -> str:
  return 'n/a' if value is None else f'{value / 2**30:.3f} GiB'


def _number(value, unit: str = '') -> str:
  return 'n/a' if value is None else f'{value:.3g}{unit}'


def _memory_line(report: dict) -> str:
  if report.get('peak_bytes') is None:
    return '  per device: memory not reported by this backend (no memory analysis)'
  return (
    f'  per device: arguments {_gib(report["argument_bytes"])}, outputs '
    f'{_gib(report["output_bytes"])}, temporaries {_gib(report["temp_bytes"])}, '
    f'peak {_gib(report["peak_bytes"])} of {_gib(report["device_memory_bytes"])}'
  )


def _cost_line(report: dict) -> str:
  kernels = report.get('kernels')
  counted = '' if kernels is None else f'; {kernels} kernels'
  return (
    f'  FLOPs {_number(report["flops"])}, bytes accessed '
    f'{_number(report["bytes_accessed"])} ({report["cost_source"]}{counted}), '
    f'in HBM {_number(report.get("hbm_bytes_accessed"))}'
  )


def describe(name: str, report: dict) -> str:
  """One step's report as a few readable lines."""
  if not report['compiled']:
    return f'{name}: NOT COMPILED ({report["compile_s"]} s): {report["error"]}'
  collectives = (
    ', '.join(
      f'{kind} x{c["count"]} ({c["bytes"] / 2**20:.2f} MiB)'
      for kind, c in report['collectives'].items()
    )
    or 'none'
  )
  errs = (report.get('estimate_errs') or {}).get('est_step_ms')
  form = f' ({report["form"]} form)' if report.get('form') else ''
  return '\n'.join(
    [
      f'{name}{form}: compiled in {report["compile_s"]} s',
      _memory_line(report),
      _cost_line(report),
      f'  collectives: {collectives}; grouped convolutions: '
      f'{report["grouped_convolutions"]}',
      f'  estimate: {_number(report["est_step_ms"], " ms")} per step, '
      f'{_number(report["est_images_per_sec_per_device"])} images/s per device'
      + (f' (errs {errs})' if errs else ''),
    ]
  )


def start_peer(peer: str, argv: list[str]) -> subprocess.Popen:
  """Starts the peer's compile (`python -m sharp_unet_jax.benchmarks.keras_aot` with
  this program's flags) in a process of its own."""
  if peer != 'keras':
    raise UserError(f'--peer={peer!r}: the only peer is keras.')
  flags_ = [a for a in argv[1:] if not a.startswith('--peer')]
  env = dict(os.environ, KERAS_BACKEND='jax', ALLOW_MULTIPLE_LIBTPU_LOAD='1')
  command = [sys.executable, '-m', 'sharp_unet_jax.benchmarks.keras_aot', *flags_]
  return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)


def peer_ratios(summary: dict, process: subprocess.Popen) -> None:
  """Reads the peer's reports into `summary` and prints ours / peer.

  Each step both compiled gains `time_ours_over_peer`: our estimated step
  time over the peer's (timing.TIME_RATIO, lower is better); the summary
  names the convention in `ratio`.
  """
  output, _ = process.communicate()
  lines = output.strip().splitlines()
  if process.returncode or not lines:
    raise UserError(f'The Keras peer failed (exit {process.returncode}).')
  print('\n'.join(lines[:-1]), flush=True)
  summary['peer'] = {'name': 'keras', 'steps': json.loads(lines[-1])['steps']}
  summary['ratio'] = timing.TIME_RATIO
  for name, theirs in summary['peer']['steps'].items():
    ours = summary['steps'].get(name)
    if ours is None:
      continue
    ratio = timing.time_ratio(ours.get('est_step_ms'), theirs.get('est_step_ms'))
    ours['time_ours_over_peer'] = ratio
    print(
      f'{name}: estimated {timing.TIME_RATIO} (Keras): {_number(ratio)}; '
      f'kernels {ours.get("kernels")} / {theirs.get("kernels")}; bytes '
      f'{_number(ours.get("bytes_accessed"))} / '
      f'{_number(theirs.get("bytes_accessed"))}; HBM bytes '
      f'{_number(ours.get("hbm_bytes_accessed"))} / '
      f'{_number(theirs.get("hbm_bytes_accessed"))}',
      flush=True,
    )


def stop(process: Optional[subprocess.Popen]) -> None:
  """Ends the peer's process if it still runs (our compile failed first)."""
  if process is not None and process.poll() is None:
    process.kill()
    process.communicate()


def run(
  config, config_name: str, target_spec: str, steps, peer_name: Optional[str], argv
) -> dict:
  """Compiles `config`'s steps for the target (and the peer's, if named,
  started with this program's `argv`); prints each report and, last, the
  JSON summary, which it returns. The peer's process ends with this call.

  Raises:
    UserError: a bad target or config, a failed peer, a step too large.
  """
  target = targets.parse(target_spec)
  print(
    f'{target_spec}: {len(target.devices)} x {target.devices[0].device_kind}; '
    f'{config.model}, {config.dtype}, batch {config.batch_size} (eval '
    f'{config.eval_batch_size}), {config.image_size[0]}x{config.image_size[1]}. '
    'TPU/GPU figures are compiler estimates.',
    flush=True,
  )
  peer = start_peer(peer_name, argv) if peer_name else None
  try:
    reports = aot_steps.compile_all(
      config,
      target,
      on_step=lambda name, r: print(describe(name, r), flush=True),
      steps=steps,
    )
    summary = {'target': target_spec, 'config': config_name}
    summary['steps'] = reports
    try:
      if peer is not None:
        peer_ratios(summary, peer)
      aot_steps.check_fits(reports)
    finally:
      print(json.dumps(summary), flush=True)
  finally:
    stop(peer)
  return summary


def main(argv) -> None:
  """Entry point of `python -m sharp_unet_jax.aot`."""
  del argv  # cli.run refuses positional arguments
  # Compiling needs no attached accelerator; keep JAX from probing for one.
  jax.config.update('jax_platforms', 'cpu')
  peer_name = FLAGS['peer'].value if 'peer' in FLAGS else None
  summary = run(
    FLAGS.config,
    FLAGS['config'].config_filename,
    FLAGS.target,
    FLAGS.steps,
    peer_name,
    sys.argv,
  )
  if not all(r['compiled'] for r in summary['steps'].values()):
    sys.exit(1)


def define_flags() -> None:
  """--config and --target (only when run as a program)."""
  config_flags.DEFINE_config_file(
    'config', None, 'Training config file.', lock_config=True
  )
  flags.DEFINE_string('target', None, 'tpu:<topology>, gpu:<chip>:<count> or cpu:<n>.')
  flags.DEFINE_list(
    'steps', list(aot_steps.STEPS), f'Steps to compile, of {",".join(aot_steps.STEPS)}.'
  )
  flags.mark_flags_as_required(['config', 'target'])


if __name__ == '__main__':
  define_flags()
  flags.DEFINE_string('peer', None, "'keras': compile the paper's model too.")
  cli.run(main)
