"""The per-level convolution benchmark: the shapes it times, and one tiny run."""

from sharp_unet_jax import conv_benchmark


def test_conv_shapes_are_the_unets_distinct_3x3_convolutions():
  shapes = conv_benchmark.conv_shapes((128, 128), batch_size=4, filters=32)
  # Per level 0-3: encoder in, encoder second, decoder in; bottleneck: two.
  assert len(shapes) == 4 * 3 + 2
  assert shapes[0] == (4, 128, 128, 3, 32)
  assert (4, 128, 128, 64, 32) in shapes  # decoder 0 after the concatenation
  assert (4, 64, 64, 32, 64) in shapes  # encoder 1
  assert shapes[-1] == (4, 8, 8, 512, 512)


def test_time_shape_reports_every_part_of_every_implementation():
  result = conv_benchmark.time_shape((1, 8, 8, 4, 4), repeats=1)
  assert set(result) == {'xla_project', 'xla_default', 'tensorflow'}
  for by_part in result.values():
    assert set(by_part) == set(conv_benchmark.PARTS)
    assert all(ms > 0 for ms in by_part.values())
