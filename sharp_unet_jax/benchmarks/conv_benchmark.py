"""Per-level 3x3 convolution times: XLA (as this project compiles it) vs oneDNN.

Usage:

  python -m sharp_unet_jax.benchmarks.conv_benchmark --image_size=192,256 \\
    --batch_size=16 --filters=32 --repeats=5

For every distinct 3x3 convolution of the U-Net at that input size (encoder,
bottleneck and decoder levels), it times the forward pass, the data gradient
and the weight gradient three ways, interleaved op by op so that machine load
hits all alike: jitted JAX with this project's CPU compiler options
(`xla_options.compute_options('cpu')`), jitted JAX with jaxlib's defaults, and
TensorFlow's own kernels (oneDNN on CPU), which the paper's Keras model uses.
It prints one line per shape and, last, a JSON object with all the medians
and their totals (each distinct shape counted once, so the totals are not the
convolution time of one train step).
"""

import json
import statistics
import sys
import time

from absl import app, flags
import jax
from jax import lax
import numpy as np

from sharp_unet_jax.benchmarks import benchmark, timing
from sharp_unet_jax.compilation import xla_options

DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')
PARTS = ('forward', 'data_grad', 'weight_grad')


def conv_shapes(image_size, batch_size: int, filters: int, depth: int = 4, channels=3):
  """(N, H, W, C_in, C_out) of each distinct 3x3 convolution of the U-Net."""
  height, width = image_size
  shapes = []
  for level in range(depth + 1):
    features = filters * 2**level
    side = (batch_size, height >> level, width >> level)
    encoder_in = channels if level == 0 else features // 2
    shapes.append((*side, encoder_in, features))
    shapes.append((*side, features, features))
    if level < depth:  # decoder: [upsampled, skip] -> features
      shapes.append((*side, 2 * features, features))
  return sorted(set(shapes), key=lambda s: (-s[1], s[3]))


def _conv(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=DIMENSIONS)


def jax_parts(compiler_options):
  """Jitted forward, data-gradient and weight-gradient functions of (x, w, g)."""
  functions = {
    'forward': lambda x, w, g: _conv(x, w),
    'data_grad': lambda x, w, g: jax.vjp(lambda x_: _conv(x_, w), x)[1](g)[0],
    'weight_grad': lambda x, w, g: jax.vjp(lambda w_: _conv(x, w_), w)[1](g)[0],
  }
  return {
    name: jax.jit(fn, compiler_options=compiler_options)
    for name, fn in functions.items()
  }


def tensorflow_parts(shape):
  """TensorFlow's forward and gradient kernels of one shape (oneDNN on CPU)."""
  import tensorflow as tf  # noqa: PLC0415

  n, h, w, c, f = shape
  strides = [1, 1, 1, 1]
  return {
    'forward': tf.function(lambda x, k, g: tf.nn.conv2d(x, k, 1, 'SAME')),
    'data_grad': tf.function(
      lambda x, k, g: tf.raw_ops.Conv2DBackpropInput(
        input_sizes=[n, h, w, c],
        filter=k,
        out_backprop=g,
        strides=strides,
        padding='SAME',
      )
    ),
    'weight_grad': tf.function(
      lambda x, k, g: tf.raw_ops.Conv2DBackpropFilter(
        input=x,
        filter_sizes=[3, 3, c, f],
        out_backprop=g,
        strides=strides,
        padding='SAME',
      )
    ),
  }


def _time_once(fn, args, wait) -> float:
  start = time.perf_counter()
  wait(fn(*args))
  return (time.perf_counter() - start) * 1e3


def time_shape(shape, repeats: int, with_tensorflow: bool = True) -> dict:
  """Median milliseconds per implementation and part for one conv shape."""
  n, h, w, c, f = shape
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n, h, w, c), np.float32)
  k = (rng.standard_normal((3, 3, c, f), np.float32) * 0.1).astype(np.float32)
  g = rng.standard_normal((n, h, w, f), np.float32)
  candidates = {
    'xla_project': (
      jax_parts(xla_options.compute_options(xla_options.attached_platform())),
      timing.block,
    ),
    'xla_default': (jax_parts(None), timing.block),
  }
  if with_tensorflow:
    candidates['tensorflow'] = (tensorflow_parts(shape), lambda out: out.numpy())
  on_device = tuple(jax.device_put(a) for a in (x, k, g))
  args = {'xla_project': on_device, 'xla_default': on_device}
  if with_tensorflow:
    import tensorflow as tf  # noqa: PLC0415

    args['tensorflow'] = tuple(tf.constant(a) for a in (x, k, g))
  times = {name: {part: [] for part in PARTS} for name in candidates}
  for name, (parts, wait) in candidates.items():  # compile / warm up
    for part in PARTS:
      _time_once(parts[part], args[name], wait)
  for _ in range(repeats):
    for part in PARTS:
      for name, (parts, wait) in candidates.items():
        times[name][part].append(_time_once(parts[part], args[name], wait))
  return {
    name: {part: statistics.median(t) for part, t in by_part.items()}
    for name, by_part in times.items()
  }


def main(argv) -> None:
  """Entry point of `python -m sharp_unet_jax.benchmarks.conv_benchmark`."""
  del argv
  fv = flags.FLAGS
  shapes = conv_shapes(
    benchmark.parse_size(fv.image_size), fv.batch_size, fv.filters, fv.depth
  )
  if xla_options.compute_options(xla_options.attached_platform()) is None:
    print(
      'note: the project passes no compiler options here,'
      ' so xla_project equals xla_default'
    )
  rows = []
  for shape in shapes:
    result = time_shape(shape, fv.repeats, fv.tensorflow)
    rows.append({'shape': list(shape), **result})
    cells = ' | '.join(
      f'{name} ' + '/'.join(f'{result[name][p]:.1f}' for p in PARTS) for name in result
    )
    print(f'{"x".join(map(str, shape))}: {cells}  (ms fwd/dgrad/wgrad)')
  totals = {
    name: {part: sum(row[name][part] for row in rows) for part in PARTS}
    for name in rows[0]
    if name != 'shape'
  }
  sys.stdout.flush()
  print(json.dumps({'rows': rows, 'totals_ms': totals}, sort_keys=True))


def define_flags() -> None:
  """Defines the command's flags; called only when run as a program."""
  flags.DEFINE_list('image_size', ['128'], 'H or H,W of the U-Net input.')
  flags.DEFINE_integer('batch_size', 4, 'Batch size.')
  flags.DEFINE_integer('filters', 32, 'Channels of the first level.')
  flags.DEFINE_integer('depth', 4, 'Pooling levels.')
  flags.DEFINE_integer('repeats', 5, 'Timed calls per op and implementation.')
  flags.DEFINE_bool('tensorflow', True, 'Also time TensorFlow (oneDNN) kernels.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
