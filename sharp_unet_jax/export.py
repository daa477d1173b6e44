r"""Exports a trained model as a self-contained predictor for serving.

  python -m sharp_unet_jax.export --workdir=DIR --output=OUT \
      --format=stablehlo|saved_model [--checkpoint=latest|best|STEP \
      --input_channels=3 --input_dtype=uint8 --platforms=cpu,cuda]

The predictor takes integer images (B, H, W, C) as stored on disk (uint8 by
default), converts their channels to the model's like the training data
(grey is repeated to RGB, alpha is dropped, RGB becomes grey by the ITU-R 601
luma), scales them to [0, 1], runs the model and returns float32
probabilities (B, H, W, K): the sigmoid of the single logit of a binary model
(K = 1), the softmax over classes otherwise. B, H and W are symbolic; H and W
must be multiples of 2**depth.

Formats, both written into the new folder OUT with OUT/predictor.json (input
and output spec, model config, source checkpoint):

- stablehlo: OUT/predictor.stablehlo, a serialized `jax.export.Exported`
  with the parameters embedded. Load and call it with JAX alone:
    exported = jax.export.deserialize(open(path, 'rb').read())
    probabilities = exported.call(images)
- saved_model: a TensorFlow SavedModel (the jax.export module written in the
  StableHLO version the installed TensorFlow reads, the parameters as
  variables) whose 'serving_default' signature maps 'images' (uint8) to
  'probabilities'. Serving it needs TensorFlow only:
    model = tf.saved_model.load(OUT)
    model.signatures['serving_default'](images=images)['probabilities']

Both embed compiled code for the --platforms they were exported for.
"""

import json
import os
from typing import Callable, Sequence

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from sharp_unet_jax import cli
from sharp_unet_jax.data import channels
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.training import restore

FORMATS = ('stablehlo', 'saved_model')
PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')
INPUT_DTYPES = ('uint8', 'uint16')
STABLEHLO_FILE = 'predictor.stablehlo'
SPEC_FILE = 'predictor.json'


def make_predictor(
  restored: restore.Restored, input_dtype: str = 'uint8'
) -> Callable[[dict, jax.Array], jax.Array]:
  """The serving function: (params, integer images) -> probabilities.

  Args:
    restored: the model, config and parameters of a workdir.
    input_dtype: the integer dtype of the images; they are scaled by its
      maximum, like the training data.

  Returns:
    A pure function of (params, images (B, H, W, C_in)) returning float32
    probabilities (B, H, W, num_classes).
  """
  config = restored.config
  scale = float(np.iinfo(np.dtype(input_dtype)).max)

  def predict(params, images):
    pixels = channels.to_channels(images.astype(jnp.float32), config.num_channels)
    logits = restored.apply(params, pixels / scale)
    if config.num_classes == 1:
      return jax.nn.sigmoid(logits)
    return jax.nn.softmax(logits, axis=-1)

  return predict


def input_shape_spec(depth: int, channels: int) -> str:
  """Symbolic input shape, e.g. 'b, 16*h, 16*w, 3' for depth 4."""
  factor = 2**depth
  return f'b, {factor}*h, {factor}*w, {channels}'


def _spec(restored, export_format, input_channels, input_dtype, platforms) -> dict:
  config = restored.config
  factor = 2**config.depth
  return {
    'format': export_format,
    'input': {
      'name': 'images',
      'dtype': input_dtype,
      'shape': ['batch', f'{factor}*h', f'{factor}*w', input_channels],
      'sides_multiple_of': factor,
      'scaled_by': int(np.iinfo(np.dtype(input_dtype)).max),
    },
    'output': {
      'name': 'probabilities',
      'dtype': 'float32',
      'shape': ['batch', f'{factor}*h', f'{factor}*w', config.num_classes],
      'activation': 'sigmoid' if config.num_classes == 1 else 'softmax',
    },
    'platforms': list(platforms),
    'checkpoint': restored.checkpoint,
    'step': restored.step,
    'training_image_size': list(config.image_size),
    'config': config.to_dict(),
    'jax_version': jax.__version__,
  }


def export_stablehlo(restored, output, input_channels, input_dtype, platforms):
  """Writes OUT/predictor.stablehlo with the parameters embedded."""
  predict = make_predictor(restored, input_dtype)
  params = jax.tree_util.tree_map(jnp.asarray, restored.params)
  shape = jax.export.symbolic_shape(
    input_shape_spec(restored.config.depth, input_channels)
  )
  images = jax.ShapeDtypeStruct(shape, jnp.dtype(input_dtype))
  exported = jax.export.export(
    jax.jit(lambda x: predict(params, x)), platforms=tuple(platforms)
  )(images)
  with open(os.path.join(output, STABLEHLO_FILE), 'wb') as f:
    f.write(exported.serialize())


def tensorflow_stablehlo_version() -> str:
  """The StableHLO version a SavedModel's module is written in.

  JAX writes StableHLO about a month old; the installed TensorFlow may read
  only an older version (TensorFlow 2.21 reads up to 1.13.7, JAX 0.12 writes
  1.18.0), so the module is rewritten in the older of the two.

  Returns:
    A StableHLO version string such as '1.13.7'.
  """
  from jax.extend.mlir.dialects import stablehlo  # noqa: PLC0415
  from tensorflow.compiler.mlir.stablehlo import stablehlo as tf_stablehlo  # noqa: PLC0415

  jax_version = stablehlo.get_version_from_compatibility_requirement(
    stablehlo.StablehloCompatibilityRequirement.WEEK_4
  )
  return tf_stablehlo.get_smaller_version(
    jax_version, tf_stablehlo.get_current_version()
  )


def export_saved_model(restored, output, input_channels, input_dtype, platforms):
  """Writes a TensorFlow SavedModel with a uint8 'serving_default' signature.

  The predictor is exported with `jax.export`, its StableHLO rewritten in the
  version the installed TensorFlow reads, and called from TensorFlow with the
  XlaCallModule op (what jax2tf does, without its choice of version).
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from jax.extend.mlir.dialects import stablehlo  # noqa: PLC0415
  import tensorflow as tf  # noqa: PLC0415
  from tensorflow.compiler.tf2xla.python import xla as tfxla  # noqa: PLC0415

  factor = 2**restored.config.depth
  params = jax.tree_util.tree_map(np.asarray, restored.params)
  shape = jax.export.symbolic_shape(
    input_shape_spec(restored.config.depth, input_channels)
  )
  exported = jax.export.export(
    jax.jit(make_predictor(restored, input_dtype)), platforms=tuple(platforms)
  )(params, jax.ShapeDtypeStruct(shape, jnp.dtype(input_dtype)))
  module = stablehlo.serialize_portable_artifact_str(
    stablehlo.deserialize_portable_artifact_str(exported.mlir_module_serialized),
    tensorflow_stablehlo_version(),
  )
  holder = tf.Module()
  holder.params = [
    tf.Variable(x, trainable=False) for x in jax.tree_util.tree_leaves(params)
  ]
  spec = tf.TensorSpec([None, None, None, input_channels], input_dtype, name='images')
  (out_aval,) = exported.out_avals

  @tf.function(input_signature=[spec], autograph=False)
  def serve(images):
    sides = tf.shape(images)[1:3]
    check = tf.debugging.assert_equal(
      sides % factor,
      tf.zeros_like(sides),
      message=f'image height and width must be multiples of {factor}',
    )
    args = [*holder.params, images]
    with tf.control_dependencies([check]):
      (probabilities,) = tfxla.call_module(
        [args[i] for i in sorted(exported.module_kept_var_idx)],
        version=exported.calling_convention_version,
        module=module,
        Tout=[tf.float32],
        Sout=[(None, None, None, out_aval.shape[-1])],
        platforms=[p.upper() for p in exported.platforms],
        function_list=[],
        has_token_input_output=False,
        disabled_checks=[],
        use_shardy_partitioner=jax.config.jax_use_shardy_partitioner,
      )
    return {'probabilities': probabilities}

  holder.serve = serve
  tf.saved_model.save(holder, output, signatures={'serving_default': serve})


_EXPORTERS = {'stablehlo': export_stablehlo, 'saved_model': export_saved_model}


def parse_platforms(value: str) -> tuple[str, ...]:
  """'cpu,cuda' -> ('cpu', 'cuda').

  Raises:
    UserError: for an empty list or an unknown platform.
  """
  names = tuple(p.strip().lower() for p in str(value or '').split(',') if p.strip())
  unknown = [p for p in names if p not in PLATFORMS]
  if not names or unknown:
    raise UserError(
      f'--platforms={value!r}: use a comma-separated list of {", ".join(PLATFORMS)}.'
    )
  return names


def export(
  workdir: str,
  output: str,
  export_format: str = 'stablehlo',
  checkpoint: str = 'latest',
  input_channels: int = 0,
  input_dtype: str = 'uint8',
  platforms: Sequence[str] = ('cpu',),
) -> dict:
  """Exports the predictor of a workdir's checkpoint into the new folder `output`.

  Args:
    workdir: a training (or convert_keras) workdir.
    output: a folder to create; it must not exist or be empty.
    export_format: 'stablehlo' or 'saved_model'.
    checkpoint: 'latest', 'best' or a step number.
    input_channels: channels of the served images (1, 3 or 4); 0 means the
      model's config.num_channels.
    input_dtype: 'uint8' or 'uint16'.
    platforms: platforms to embed code for ('cpu', 'cuda', 'rocm', 'tpu').

  Returns:
    The spec written to OUT/predictor.json.

  Raises:
    UserError: for a bad workdir, checkpoint, format, output or input spec.
  """
  if export_format not in FORMATS:
    raise UserError(f'--format={export_format!r}: use one of {", ".join(FORMATS)}.')
  if input_dtype not in INPUT_DTYPES:
    raise UserError(f'--input_dtype={input_dtype!r}: use uint8 or uint16.')
  if not output:
    raise UserError('--output is required: the folder to write the predictor to.')
  if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
    raise UserError(f'--output={output} exists and is not empty; choose a new folder.')
  platforms = parse_platforms(','.join(platforms))
  restored = restore.load(workdir, checkpoint)
  input_channels = int(input_channels) or int(restored.config.num_channels)
  if input_channels not in (1, 3, 4):
    raise UserError(f'--input_channels={input_channels}: use 1, 3 or 4.')
  channels.to_channels(jnp.zeros((1, input_channels)), restored.config.num_channels)
  os.makedirs(output, exist_ok=True)
  _EXPORTERS[export_format](restored, output, input_channels, input_dtype, platforms)
  spec = _spec(restored, export_format, input_channels, input_dtype, platforms)
  with open(os.path.join(output, SPEC_FILE), 'w') as f:
    json.dump(spec, f, indent=2, sort_keys=True)
    f.write('\n')
  return spec


def define_flags() -> None:
  """Defines the command line flags of this module."""
  flags.DEFINE_string('workdir', None, 'Training workdir to export.')
  flags.DEFINE_string('output', None, 'New folder for the exported predictor.')
  flags.DEFINE_enum('format', 'stablehlo', FORMATS, 'What to write.')
  flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' or a step number.")
  flags.DEFINE_integer(
    'input_channels', 0, 'Channels of served images (1, 3, 4); 0: the model input.'
  )
  flags.DEFINE_enum('input_dtype', 'uint8', INPUT_DTYPES, 'Served image dtype.')
  flags.DEFINE_string(
    'platforms', 'cpu', "Comma-separated platforms to compile for, e.g. 'cpu,cuda'."
  )
  flags.mark_flags_as_required(['workdir', 'output'])


def main(argv) -> None:
  """Command line entry point (see the module docstring)."""

  del argv  # cli.run refuses positional arguments.
  values = flags.FLAGS
  cli.warnings_only_by_default()
  spec = export(
    values.workdir,
    values.output,
    values.format,
    values.checkpoint,
    values.input_channels,
    values.input_dtype,
    parse_platforms(values.platforms),
  )
  print(
    f'Exported {spec["format"]} for {",".join(spec["platforms"])} to '
    f'{os.path.abspath(values.output)}: {spec["input"]["dtype"]} images '
    f'{spec["input"]["shape"]} -> {spec["output"]["activation"]} probabilities '
    f'{spec["output"]["shape"]}.'
  )


if __name__ == '__main__':
  define_flags()
  cli.run(main)
