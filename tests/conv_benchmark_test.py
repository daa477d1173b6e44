"""The per-level convolution benchmark: the shapes it times, and one tiny run."""

import numpy as np

from sharp_unet_jax.benchmarks import conv_benchmark


def test_conv_shapes_are_the_unets_distinct_3x3_convolutions():
  shapes = conv_benchmark.conv_shapes((128, 128), batch_size=4, filters=32)
  # Per level 0-3: encoder in, encoder second, decoder in; bottleneck: two.
  assert len(shapes) == 4 * 3 + 2
  assert shapes[0] == (4, 128, 128, 3, 32)
  assert (4, 128, 128, 64, 32) in shapes  # decoder 0 after the concatenation
  assert (4, 64, 64, 32, 64) in shapes  # encoder 1
  assert shapes[-1] == (4, 8, 8, 512, 512)


def test_the_implementations_compute_the_same_convolutions():
  # The timings compare like with like only if TensorFlow's kernels compute
  # what the jitted JAX functions do, part by part.
  import tensorflow as tf  # noqa: PLC0415

  shape = (2, 8, 6, 3, 5)
  rng = np.random.default_rng(0)
  x = rng.standard_normal(shape[:4], np.float32)
  k = rng.standard_normal((3, 3, 3, 5), np.float32)
  g = rng.standard_normal((*shape[:3], 5), np.float32)
  ours = conv_benchmark.jax_parts(None)
  theirs = conv_benchmark.tensorflow_parts(shape)
  for part in conv_benchmark.PARTS:
    expected = np.asarray(ours[part](x, k, g))
    got = theirs[part](*(tf.constant(a) for a in (x, k, g))).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=part)


def test_time_shape_takes_medians_after_one_untimed_call(monkeypatch):
  calls = []

  def fake_time_once(fn, args, wait):
    calls.append(fn)
    # Per function: 1000 ms (the warm-up), then 1, 2, 3, ... ms.
    return 1000.0 if calls.count(fn) == 1 else float(calls.count(fn) - 1)

  monkeypatch.setattr(conv_benchmark, '_time_once', fake_time_once)
  result = conv_benchmark.time_shape((1, 8, 8, 4, 4), repeats=3, with_tensorflow=False)
  assert set(result) == {'xla_project', 'xla_default'}
  for by_part in result.values():
    assert by_part == {part: 2.0 for part in conv_benchmark.PARTS}
  assert len(calls) == 2 * 3 * (1 + 3)
