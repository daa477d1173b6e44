"""The CPU compiler options: what they are, that they take effect, same results."""

import collections
import re

import jax
from jax import lax
import numpy as np

from sharp_unet_jax.benchmarks import benchmark
from sharp_unet_jax.compilation import xla_options
from sharp_unet_jax.training import train

DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


def conv_and_gradients(x, w, g):
  def conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=DIMENSIONS)

  y, vjp = jax.vjp(conv, x, w)
  return (y, *vjp(g))


def convolutions_by_fusion_kind(hlo: str) -> collections.Counter:
  """How many convolutions sit in fusions of each kind ('__ynn_fusion', ...)."""
  counts = collections.Counter()
  for computation in re.split(r'\n(?=%)', hlo):
    convolutions = computation.count(' convolution(')
    if not convolutions:
      continue
    name = computation.split(' ', 1)[0]
    for call in re.findall(rf'calls={re.escape(name)}(?=[,\s}}]).*', hlo):
      for kind in re.findall(r'"kind":"(\w+)"', call):
        counts[kind] += convolutions
  return counts


def test_cpu_and_gpu_programs_get_their_own_options(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
  assert xla_options.compute_options('cpu') == {
    xla_options.YNN_FUSION_FLAG: xla_options.YNN_DOTS_ONLY
  }
  assert xla_options.init_options('cpu')
  assert xla_options.compute_options('gpu') == {
    xla_options.ALL_REDUCE_COMBINE_FLAG: 2**20,
    xla_options.COMMAND_BUFFER_FLAG: xla_options.command_buffer_types(),
  }
  # Programs for TPU get none, and initialisation only on CPU, whatever the host is.
  assert xla_options.compute_options('tpu') is None
  for platform in ('gpu', 'tpu'):
    assert xla_options.init_options(platform) is None


def test_command_types_only_for_jaxlibs_whose_defaults_are_listed():
  assert xla_options.command_buffer_types((0, 10)).split(',') == [
    *xla_options.DEFAULT_COMMAND_TYPES[(0, 10)],
    'CONVOLUTION',
  ]
  assert 'COLLECTIVES_KERNEL' in xla_options.command_buffer_types((0, 12))
  assert xla_options.command_buffer_types((0, 11)) is None


def test_a_users_own_flags_win(monkeypatch):
  monkeypatch.setenv(
    'XLA_FLAGS',
    '--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION',
  )
  assert xla_options.compute_options('cpu') is None
  assert xla_options.compute_options('gpu') is not None
  # Each flag the user names is left to them; the others stay.
  monkeypatch.setenv('XLA_FLAGS', '--xla_gpu_all_reduce_combine_threshold_bytes=0')
  assert xla_options.compute_options('gpu') == {
    xla_options.COMMAND_BUFFER_FLAG: xla_options.command_buffer_types()
  }
  monkeypatch.setenv(
    'XLA_FLAGS',
    '--xla_gpu_all_reduce_combine_threshold_bytes=0 --xla_gpu_enable_command_buffer=',
  )
  assert xla_options.compute_options('gpu') is None
  # Names are matched whole: a longer flag that begins with ours is another flag.
  monkeypatch.setenv('XLA_FLAGS', '--xla_gpu_enable_command_buffer_va_remapping=true')
  assert xla_options.COMMAND_BUFFER_FLAG in xla_options.compute_options('gpu')


def test_convolutions_leave_ynnpack_and_results_stay_the_same():
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, 16, 16, 32))
  w = jax.random.normal(keys[1], (3, 3, 32, 32))
  g = jax.random.normal(keys[2], (2, 16, 16, 32))
  lowered = jax.jit(conv_and_gradients).lower(x, w, g)
  default = lowered.compile()
  ours = lowered.compile(compiler_options=xla_options.compute_options('cpu'))
  # jaxlib's default puts convolutions into YNNPACK fusions; ours does not.
  assert '__ynn_fusion' in convolutions_by_fusion_kind(default.as_text())
  assert ' convolution(' in ours.as_text()
  assert '__ynn_fusion' not in convolutions_by_fusion_kind(ours.as_text())
  for a, b in zip(ours(x, w, g), default(x, w, g)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def compiled_train_and_predict_hlo(config):
  trainer = train.Trainer(config)
  state = trainer.initial_state()
  batch = trainer.global_batch(benchmark.random_batch(config, np.random.default_rng(0)))
  step = trainer.train_step.lower(state, batch).compile().as_text()
  predict = trainer.predict.lower(state.params, batch['image']).compile().as_text()
  return step, predict


def test_the_trainers_steps_are_compiled_with_the_options(tiny_config, monkeypatch):
  config = tiny_config
  config.num_filters, config.depth, config.image_size = 32, 1, (16, 16)
  config.batch_size = config.eval_batch_size = 4
  step, predict = compiled_train_and_predict_hlo(config)
  # Control: when the user's XLA_FLAGS name the flag, the project sets nothing
  # and jaxlib's default (YNNPACK convolutions) shows up in the same count.
  monkeypatch.setenv('XLA_FLAGS', f'--{xla_options.YNN_FUSION_FLAG}=default')
  default_step, default_predict = compiled_train_and_predict_hlo(config)
  ynn = '__ynn_fusion'
  assert convolutions_by_fusion_kind(default_step)[ynn] > 0
  assert convolutions_by_fusion_kind(step)[ynn] == 0
  # In the forward pass YNNPACK's dot fusions may still take in a convolution
  # that feeds a dot (the up-convolution); fewer than by default.
  assert (
    convolutions_by_fusion_kind(predict)[ynn]
    < convolutions_by_fusion_kind(default_predict)[ynn]
  )


def test_options_the_cpu_compiler_does_not_know_are_left_out():
  # jaxlib renames and retires CPU options between releases (0.11 has no
  # xla_cpu_use_fusion_emitters); a program must still compile without them.
  known = {'xla_backend_optimization_level': 0}
  unknown = {'xla_cpu_option_no_release_has': True}
  assert xla_options.known_to_cpu_compiler({**known, **unknown}) == known
  options = xla_options.init_options('cpu')
  assert options['xla_backend_optimization_level'] == 0
  jax.jit(lambda x: x * 2, compiler_options=options).lower(1.0).compile()
