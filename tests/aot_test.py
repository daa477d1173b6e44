"""Steps compiled for a TPU slice and for GPUs on this CPU host (tiny config).

Needs the compile-only wheels of requirements-aot.txt (`make test` runs the
suite in .venv-aot, which has them).
"""

import json
import os
import re
import subprocess
import sys

import jax
from jax.sharding import PartitionSpec
import numpy as np
import pytest

from configs import tiny
from sharp_unet_jax import aot
from sharp_unet_jax.benchmarks import timing
from sharp_unet_jax.compilation import (
  compile_reports,
  hbm_traffic,
  hlo_stats,
  targets,
  xla_options,
)
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.training import aot_steps, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The TPU programs compute in bfloat16, the GPU ones in float32: each dtype's
# gradient all-reduce is checked once (test_gradients_travel_in_one_all_reduce).
DTYPES = {'tpu:v5e:2x2': 'bfloat16', 'gpu:h100:4': 'float32'}


def config_for(target):
  """configs/tiny.py at the dtype DTYPES gives the target."""
  config = tiny.get_config()
  config.dtype = DTYPES[target.spec]
  return config


@pytest.fixture(scope='module', params=list(DTYPES))
def target(request):
  return targets.parse(request.param)


@pytest.fixture(scope='module')
def trainer(target):
  return train.Trainer(config_for(target), target.mesh())


@pytest.fixture(scope='module')
def compiled(trainer):
  """{step: (lowered, compiled)} of Sharp U-Net for the target."""
  programs = {}
  for name, (fn, args) in aot_steps.step_inputs(trainer).items():
    lowered, program, _ = compile_reports.compile_step(fn, args)
    assert not isinstance(program, str), program
    programs[name] = (lowered, program)
  return programs


@pytest.fixture(scope='module')
def sharp_reports(compiled, target, trainer):
  return {
    name: compile_reports.summarize(
      program, target, aot_steps.compute_dtype(trainer.config, target), 2
    )
    for name, (lowered, program) in compiled.items()
  }


def test_the_gpu_option_keeps_large_all_reduces_out_of_the_combining():
  """A 2 MiB sum and a small one: XLA:GPU's default combines them into one
  all-reduce; with compute_options('gpu') they stay two."""
  mesh = targets.parse('gpu:h100:4').mesh()
  data = jax.sharding.NamedSharding(mesh, PartitionSpec('data'))
  big = jax.ShapeDtypeStruct((4, 2**19), 'float32', sharding=data)
  small = jax.ShapeDtypeStruct((4, 4), 'float32', sharding=data)
  lowered = jax.jit(lambda a, b: (a.sum(0), b.sum(0))).lower(big, small)
  counts = {
    name: hlo_stats.collectives(lowered.compile(options).as_text())['all-reduce'][
      'count'
    ]
    for name, options in (
      ('default', None),
      ('ours', xla_options.compute_options('gpu')),
    )
  }
  assert counts == {'default': 1, 'ours': 2}


def command_buffer_types(types: str, dump_dir) -> list:
  """The command types XLA:GPU compiled a small program with, given
  `types`, from its dump of the non-default debug options: [] when `types`
  are XLA's own defaults."""
  mesh = targets.parse('gpu:h100:4').mesh()
  x = jax.ShapeDtypeStruct(
    (4, 8), 'float32', sharding=jax.sharding.NamedSharding(mesh, PartitionSpec())
  )
  options = {xla_options.COMMAND_BUFFER_FLAG: types, 'xla_dump_to': str(dump_dir)}
  jax.jit(lambda a: a * 2).lower(x).compile(options)
  (dumped,) = dump_dir.glob('*.debug_options')
  return re.findall(
    rf'^{xla_options.COMMAND_BUFFER_FLAG}: (\w+)$', dumped.read_text(), re.M
  )


def test_the_gpu_command_types_are_xlas_defaults_and_convolutions(tmp_path):
  """The option reaches XLA:GPU, and without CONVOLUTION it is this jaxlib's
  default list: fails when a jaxlib changes its defaults. (Whether XLA then
  records convolutions depends on the CUDA driver and runtime: 12.3 or
  later; a compile-only target has neither, so the program is unchanged.)"""
  jaxlib = xla_options._JAXLIB  # pylint: disable=protected-access
  assert jaxlib in xla_options.DEFAULT_COMMAND_TYPES, (
    f"list jaxlib {jaxlib}'s default command types in xla_options"
  )
  ours = xla_options.compute_options('gpu')[xla_options.COMMAND_BUFFER_FLAG]
  assert ours == xla_options.command_buffer_types()
  (tmp_path / 'ours').mkdir()
  types = command_buffer_types(ours, tmp_path / 'ours')
  assert sorted(types) == sorted(ours.split(',')) and 'CONVOLUTION' in types
  (tmp_path / 'defaults').mkdir()
  without = ','.join(t for t in ours.split(',') if t != 'CONVOLUTION')
  assert command_buffer_types(without, tmp_path / 'defaults') == []


def test_targets_give_compile_only_devices_of_the_chip(target):
  assert len(target.devices) == 4
  assert {d.platform for d in target.devices} == {target.platform}
  assert target.devices[0].device_kind == target.chip.device_kind


def test_steps_shard_the_batch_and_replicate_the_state(trainer, compiled, target):
  assert trainer.platform == target.platform and trainer.mesh.size == 4
  # No CPU option goes into a TPU or GPU program: TPU programs get none, GPU
  # programs the all-reduce combining threshold and command buffer types.
  expected = {
    'tpu': None,
    'gpu': {
      xla_options.ALL_REDUCE_COMBINE_FLAG: 2**20,
      xla_options.COMMAND_BUFFER_FLAG: xla_options.command_buffer_types(),
    },
  }
  assert trainer.compiler_options == expected[target.platform]
  state_in, batch_in = compiled['train'][1].input_shardings[0]
  assert all(s.spec == PartitionSpec() for s in jax.tree_util.tree_leaves(state_in))
  assert all(s.spec == PartitionSpec('data') for s in batch_in.values())
  # The predict step returns logits sharded like the images.
  assert compiled['predict'][1].output_shardings.spec == PartitionSpec('data')


def test_every_step_compiles_and_fits(sharp_reports, target):
  assert list(sharp_reports) == list(aot_steps.STEPS)
  for report in sharp_reports.values():
    assert 0 < report['peak_bytes'] < report['device_memory_bytes']
  train_report = sharp_reports['train']
  assert train_report['flops'] > 0
  assert train_report['est_images_per_sec_per_device'] > 0
  aot_steps.check_fits(sharp_reports)


def test_gradients_travel_in_one_all_reduce(sharp_reports, trainer, compiled):
  # Gradients (f32, one per parameter) and the metrics' sums are combined
  # into one all-reduce. In bfloat16 programs (the TPU's here) every form
  # casts the parameters to bfloat16 on each device, inside the shard_map, so
  # the all-reduce still carries float32 (cast before it, they were summed in
  # bfloat16).
  config = trainer.config
  images = jax.ShapeDtypeStruct((1, *config.image_size, config.num_channels), 'float32')
  params = jax.eval_shape(trainer.model.init, jax.random.key(0), images)['params']
  param_bytes = 4 * sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
  reduced = sharp_reports['train']['collectives']['all-reduce']
  assert reduced['count'] == 1 and len(sharp_reports['train']['collectives']) == 1
  assert param_bytes <= reduced['bytes'] <= param_bytes + 256, param_bytes
  text = compiled['train'][1].as_text()
  shapes = re.findall(r'= (.*?) all-reduce(?:-start)?\(', text)
  dtypes = {d for shape in shapes for d in re.findall(r'\b(\w+)\[[\d,]*\]', shape)}
  assert dtypes and 'bf16' not in dtypes, dtypes
  # Logits are never gathered: predict needs no communication at all.
  assert sharp_reports['predict']['collectives'] == {}
  assert 'all-gather' not in sharp_reports['eval']['collectives']


def test_sharp_unet_keeps_its_grouped_convolutions_and_unet_has_none(
  sharp_reports, target
):
  depth = tiny.get_config().depth
  # Forward and input gradient of each Sharp block: no CPU form was used.
  assert sharp_reports['train']['grouped_convolutions'] == 2 * depth
  assert sharp_reports['predict']['grouped_convolutions'] == depth
  config = config_for(target)
  config.update(model='unet', depth=1)  # no Sharp block at any depth
  trainer = train.Trainer(config, target.mesh())
  step, args = aot_steps.step_inputs(trainer)['train']
  text = step.lower(*args).compile().as_text()
  assert hlo_stats.grouped_convolutions(text) == 0
  # The reference max-pool (a reduce-window), not the CPU form.
  assert 'reduce-window(' in text or 'select-and-scatter(' in text


def test_gpu_programs_run_each_upconvolution_as_a_cudnn_data_gradient(compiled, target):
  if target.platform != 'gpu':
    pytest.skip('cuDNN custom calls are GPU programs only.')
  # 'auto' takes network.AUTO_GPU_FORM: no convolution over a dilated copy.
  text = compiled['predict'][1].as_text()
  depth = tiny.get_config().depth
  assert text.count('custom_call_target="__cudnn$convBackwardInput"') == depth


def test_gpu_programs_hold_the_sharp_kernel_whole(compiled, target):
  """'gpu_cudnn' stores the Sharp block's per-channel kernel as a whole
  constant, which XLA folds into the program: no kernel launch builds it."""
  if target.platform != 'gpu':
    pytest.skip('GPU programs only.')
  for name in ('train', 'predict'):
    text = compiled[name][1].as_text()
    built = [
      i.name
      for i in hbm_traffic.top_level(text)
      if i.op == 'fusion' and re.match(r'f32\[\d+,3,3,1\]', i.shape)
    ]
    assert not built, (name, built)


def run_aot(*flags, timeout: int = 180) -> subprocess.CompletedProcess:
  """`python -m sharp_unet_jax.aot --config=configs/tiny.py FLAGS...`."""
  command = [sys.executable, '-m', 'sharp_unet_jax.aot', '--config=configs/tiny.py']
  return subprocess.run(
    [*command, *flags], cwd=ROOT, capture_output=True, text=True, timeout=timeout
  )


def test_tpu_programs_pack_every_step(compiled, trainer, target):
  """'auto' on TPU (network.form_for_platform) packs the train, eval and
  predict steps alike: the first convolution reads a device's 2 images side
  by side."""
  if target.platform != 'tpu':
    pytest.skip('TPU programs only.')
  packed_input = re.compile(r'tensor<1x32x32x6x')
  for name in ('train', 'eval', 'predict'):
    assert packed_input.search(compiled[name][0].as_text()), name
  assert aot_steps.step_forms(trainer) == dict.fromkeys(aot_steps.STEPS, 'tpu_packed')


def test_a_batch_that_does_not_divide_fails_naming_the_key(target):
  config = tiny.get_config()
  config.batch_size = 6
  with pytest.raises(
    UserError, match='config.batch_size=6 must be a positive multiple'
  ):
    aot_steps.compile_all(config, target)


def test_too_much_memory_fails_naming_the_key():
  reports = {'train': {'peak_bytes': 17 * 2**30, 'device_memory_bytes': 16 * 2**30}}
  with pytest.raises(UserError, match='lower --config.batch_size'):
    aot_steps.check_fits(reports)


def test_bad_targets_fail_clearly():
  for spec in ('tpu', 'gpu:h100', 'gpu:k80:4', 'gpu:h100:x', 'tpu:v9:2x2', 'cpu:99'):
    with pytest.raises(UserError, match='--target='):
      targets.parse(spec)


def test_cpu_programs_keep_the_cpu_forms_and_options():
  target = targets.parse('cpu:2')
  config = tiny.get_config()
  config.depth = 1  # the forms and options do not depend on the depth
  trainer = train.Trainer(config, target.mesh())
  assert trainer.compiler_options == xla_options.compute_options('cpu')
  step, args = aot_steps.step_inputs(trainer)['train']
  text = step.lower(*args).compile().as_text()
  assert hlo_stats.grouped_convolutions(text) == 0
  assert 'reduce-window(' not in text and 'select-and-scatter(' not in text


def test_collectives_are_parsed_with_their_bytes():
  text = '\n'.join(
    [
      '  %all-reduce.3 = (f32[3,3,4,8]{3,2,1,0}, bf16[8]{0}) all-reduce(%a, %b)',
      '  %ag = ((f32[2,4]{1,0}), f32[8,4]{1,0}) all-gather-start(%x)',
      '  ROOT %ar = f32[16]{0} all-reduce-start(%y), channel_id=1',
      '  %c = f32[2,8,8,4]{3,2,1,0} convolution(%p, %k), feature_group_count=4',
      '  %d = f32[2,8,8,4]{3,2,1,0} convolution(%p, %k), window={size=3x3}',
    ]
  )
  assert hlo_stats.collectives(text) == {
    'all-reduce': {'count': 2, 'bytes': 3 * 3 * 4 * 8 * 4 + 8 * 2 + 16 * 4},
    'all-gather': {'count': 1, 'bytes': 8 * 4 * 4},
  }
  assert hlo_stats.grouped_convolutions(text) == 1
  assert np.isclose(hlo_stats.array_bytes('(pred[10], s64[])')[1], 8)


def test_v4_topologies_have_a_device_per_tensorcore():
  target = targets.parse('tpu:v4:2x2x1')
  # libtpu's compile-only v4 devices are TensorCores: 2 per chip of 4.
  assert len(target.devices) == 8
  assert target.chip.memory_bytes == 16 * 2**30
  assert train.Trainer(tiny.get_config(), target.mesh()).mesh.size == 8


def test_auto_dtype_computes_in_bfloat16_for_tpu_and_gpu_only():
  config = tiny.get_config()
  config.dtype = 'auto'
  for name, dtype in (('tpu:v5e:2x2', 'bfloat16'), ('gpu:h100:4', 'bfloat16')):
    assert train.Trainer(config, targets.parse(name).mesh()).model.dtype == dtype
  assert train.Trainer(config).model.dtype == 'float32'  # this CPU host


def test_cli_with_peer_keras_reports_time_ours_over_peer_and_its_grouped_convolutions():
  # The one run of the command: it prints each step's report and, last, the
  # JSON summary of every step (all by default).
  done = run_aot('--target=gpu:h100:4', '--peer=keras', timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  summary = json.loads(done.stdout.strip().splitlines()[-1])
  assert summary['target'] == 'gpu:h100:4' and summary['config'] == 'configs/tiny.py'
  assert list(summary['steps']) == list(aot_steps.STEPS)
  assert all(summary['steps'][name]['compiled'] for name in aot_steps.STEPS)
  assert 'train (gpu_cudnn form): compiled in' in done.stdout
  assert {summary['steps'][name]['form'] for name in aot_steps.STEPS} == {'gpu_cudnn'}
  assert summary['ratio'] == timing.TIME_RATIO == 'time ours/peer, lower is better'
  assert summary['peer']['name'] == 'keras'
  depth = tiny.get_config().depth
  theirs = summary['peer']['steps']
  # The paper's model keeps the Sharp block's depthwise convolution.
  assert theirs['train']['grouped_convolutions'] == 2 * depth
  assert theirs['eval']['grouped_convolutions'] == depth
  assert theirs['predict']['grouped_convolutions'] == depth
  for name in ('train', 'eval', 'predict'):
    ours = summary['steps'][name]
    for report in (ours, theirs[name]):
      assert report['kernels'] > report['convolution_kernels'] > 0
      assert report['flops'] > 0 and report['bytes_accessed'] > 0
      assert report['estimate_errs']['est_step_ms'].startswith('low')
    # Our time over theirs, not the other way round.
    expected = ours['est_step_ms'] / theirs[name]['est_step_ms']
    assert ours['time_ours_over_peer'] == pytest.approx(expected)
    assert f'{name}: estimated {timing.TIME_RATIO} (Keras): ' in done.stdout


def test_the_peer_process_ends_when_our_compile_fails(monkeypatch):
  started = []

  def start_peer(name, argv):
    command = [sys.executable, '-c', 'import time; time.sleep(300)']
    started.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
    return started[-1]

  def compile_all(*args, **kwargs):
    raise UserError('config.batch_size=6 must be a positive multiple of 4.')

  monkeypatch.setattr(aot, 'start_peer', start_peer)
  monkeypatch.setattr(aot_steps, 'compile_all', compile_all)
  with pytest.raises(UserError, match='batch_size'):
    aot.run(tiny.get_config(), 'configs/tiny.py', 'cpu:2', ['train'], 'keras', [])
  (peer,) = started
  assert peer.poll() is not None  # ended, not left running
