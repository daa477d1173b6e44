"""Imports the weights of the paper's Keras U-Net / Sharp U-Net into a workdir.

  python -m sharp_unet_jax.convert_keras --keras_model=model.h5 \
      --config=configs/default.py --workdir=/tmp/converted \
      [--config.num_filters=32 --config.num_classes=1 ...]

The Keras model (.h5 or .keras) is read with `keras.models.load_model`; an .h5
file that Keras cannot load (custom objects, an older Keras) is read directly
with h5py. Layers are matched to the Flax model by kind and order, whatever
their names: the Conv2D layers, in order, are encoder_0/Conv_0, Conv_1, ...,
bottleneck, decoder_{depth-1} ... decoder_0 and head; the Conv2DTranspose
layers are upsample_{depth-1} ... upsample_0. The frozen DepthwiseConv2D
kernels of the Sharp block are checked against `config.sharp_kernel` and then
dropped: the Flax model builds that kernel in code.

Kernel layouts: Conv2D kernels are (kh, kw, in, out) in both frameworks.
Keras' Conv2DTranspose kernel is (kh, kw, out, in) and is applied as the
gradient of a convolution, so Flax's `nn.ConvTranspose` (kernel (kh, kw, in,
out), transpose_kernel=False) needs the last two axes swapped and both spatial
axes reversed.

The result is an Orbax checkpoint of a train state at step 0 (fresh Adam
state) in WORKDIR/checkpoints plus WORKDIR/config.json, the layout training
writes, so `evaluate`, `predict`, `export` and resumed training read it.
"""

import os

import jax
import numpy as np

from sharp_unet_jax import cli, workdirs
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.interop.keras_io import KerasLayer, read_keras_model
from sharp_unet_jax.model import sharp_block
from sharp_unet_jax.training import checkpointing, restore, train

# Keras layers without weights that do not change inference outputs.
_PASSIVE_KINDS = frozenset(
  'InputLayer MaxPooling2D Concatenate Dropout SpatialDropout2D GaussianDropout '
  'GaussianNoise'.split()
)
_WEIGHT_KINDS = ('Conv2D', 'Conv2DTranspose', 'DepthwiseConv2D')
# At most this many problems are listed in one error message.
_MAX_REPORTED = 4


def _expected_slots(config) -> tuple[list[str], list[str]]:
  """Flax paths of the Conv2D and the Conv2DTranspose layers, in Keras order."""
  convs = []
  for level in range(config.depth):
    convs += [f'encoder_{level}/Conv_0', f'encoder_{level}/Conv_1']
  convs += ['bottleneck/Conv_0', 'bottleneck/Conv_1']
  for level in reversed(range(config.depth)):
    convs += [f'decoder_{level}/Conv_0', f'decoder_{level}/Conv_1']
  convs.append('head')
  upsamples = [f'upsample_{level}' for level in reversed(range(config.depth))]
  return convs, upsamples


def _pair(value) -> tuple:
  return (value, value) if isinstance(value, int) else tuple(value or ())


def _activation(layer: KerasLayer) -> str:
  value = layer.config.get('activation', 'linear')
  if isinstance(value, dict):
    value = value.get('config', {}).get('name', value.get('class_name'))
  return str(value or 'linear').lower()


def _check_layer(layer: KerasLayer, kernel_size: int, strides: int, activations):
  """Problems in a layer's hyper-parameters, as readable strings."""
  cfg = layer.config
  size = (kernel_size, kernel_size)
  checks = [
    ('kernel_size', _pair(cfg.get('kernel_size', size)) == size, kernel_size),
    ('strides', _pair(cfg.get('strides', 1)) == (strides, strides), strides),
    ('dilation_rate', _pair(cfg.get('dilation_rate', 1)) == (1, 1), 1),
    ('padding', kernel_size == 1 or cfg.get('padding', 'same') == 'same', 'same'),
    ('groups', cfg.get('groups', 1) == 1, 1),
    ('data_format', cfg.get('data_format') in (None, 'channels_last'), 'NHWC'),
    ('activation', _activation(layer) in activations, ' or '.join(sorted(activations))),
  ]
  return [
    f"layer '{layer.name}' ({layer.kind}) has {key}={cfg.get(key)!r}, expected {want}"
    for key, ok, want in checks
    if not ok
  ]


def _shape(array) -> str:
  return str(tuple(int(d) for d in np.shape(array)))


def _swap_halves(kernel: np.ndarray) -> np.ndarray:
  """Reorders the input channels of a kernel fed by concat([skip, up])."""
  half = kernel.shape[2] // 2
  return np.concatenate([kernel[:, :, half:], kernel[:, :, :half]], axis=2)


def _foreign_layers(layers: list[KerasLayer]) -> list[str]:
  """Problems: the layers of kinds that the U-Net does not have."""
  return [
    f"layer '{layer.name}' ({layer.kind}) "
    f'{"has weights that" if layer.weights else "is a layer"} U-Net does not have'
    for layer in layers
    if layer.kind not in _WEIGHT_KINDS and layer.kind not in _PASSIVE_KINDS
  ]


def _check_counts(by_kind, config, conv_slots, up_slots) -> None:
  """Raises UserError unless the Keras model has the config's layer counts."""
  sharp = config.model == 'sharp_unet'
  counts = (
    len(by_kind['Conv2D']),
    len(by_kind['Conv2DTranspose']),
    len(by_kind['DepthwiseConv2D']),
  )
  wanted = (len(conv_slots), len(up_slots), len(up_slots) if sharp else 0)
  if counts != wanted:
    raise UserError(
      'Architecture mismatch: the Keras model has {} Conv2D, {} Conv2DTranspose and '
      '{} DepthwiseConv2D layers, but config model={} depth={} needs {}, {} and {}. '
      'Set --config.depth and --config.model to those of the Keras model.'.format(
        *counts, config.model, config.depth, *wanted
      )
    )


class _Taker:
  """Collects the float32 weights that fit the Flax tree, and the problems."""

  def __init__(self, expected: dict):
    self.expected = expected
    self.flat = {}
    self.problems = []

  def take(self, layer: KerasLayer, path: str, kernel, bias) -> None:
    for role, value in (('kernel', kernel), ('bias', bias)):
      want = self.expected[f'{path}/{role}']
      if value is None:
        self.problems.append(f"layer '{layer.name}' ({layer.kind}) has no {role}")
      elif tuple(value.shape) != tuple(want):
        self.problems.append(
          f"layer '{layer.name}' ({layer.kind}) {role} {_shape(value)} does not fit "
          f'{path} {role} {tuple(want)}'
        )
      else:
        self.flat[f'{path}/{role}'] = np.asarray(value, np.float32)


def _up_kernel(kernel):
  """Keras (kh, kw, out, in), applied as a conv gradient -> Flax (kh, kw, in,
  out) with transpose_kernel=False, which does not flip it."""
  if kernel is None or kernel.ndim != 4:
    return kernel
  return np.transpose(kernel, (0, 1, 3, 2))[::-1, ::-1]


def convert_params(layers: list[KerasLayer], config, expected: dict) -> dict:
  """Maps Keras layers onto the Flax parameter tree of `config`'s model.

  Args:
    layers: the Keras model's layers, in model order.
    config: the training config the Flax model is built from.
    expected: flat {'encoder_0/Conv_0/kernel': shape, ...} of the Flax model.

  Returns:
    Flat {'encoder_0/Conv_0/kernel': float32 array, ...}.

  Raises:
    UserError: listing the layers whose kind, count, shape or settings do not
      match the config's architecture.
  """
  by_kind = {kind: [x for x in layers if x.kind == kind] for kind in _WEIGHT_KINDS}
  taker = _Taker(expected)
  taker.problems += _foreign_layers(layers)
  conv_slots, up_slots = _expected_slots(config)
  _check_counts(by_kind, config, conv_slots, up_slots)
  head = {'linear', 'sigmoid'} if config.num_classes == 1 else {'linear', 'softmax'}
  swapped, concat_problems = _concat_order(layers, by_kind, config.depth)
  taker.problems += concat_problems
  for layer, path in zip(by_kind['Conv2D'], conv_slots):
    is_head = path == 'head'
    taker.problems += _check_layer(
      layer, 1 if is_head else 3, 1, head if is_head else {'relu'}
    )
    kernel = layer.weights.get('kernel')
    if path in swapped and kernel is not None:
      kernel = _swap_halves(kernel)
    taker.take(layer, path, kernel, layer.weights.get('bias'))
  for layer, path in zip(by_kind['Conv2DTranspose'], up_slots):
    taker.problems += _check_layer(layer, 2, 2, {'linear'})
    taker.take(
      layer, path, _up_kernel(layer.weights.get('kernel')), layer.weights.get('bias')
    )
  if config.model == 'sharp_unet':
    taker.problems += _check_sharp_layers(
      by_kind['DepthwiseConv2D'],
      sharp_block.make_kernel(config.sharp_kernel),
      sorted(config.num_filters * 2**level for level in range(config.depth)),
    )
  _raise_problems(taker.problems)
  return taker.flat


def _raise_problems(problems: list[str]) -> None:
  """Raises one UserError naming the first few problems, if there are any."""
  if problems:
    shown = '; '.join(problems[:_MAX_REPORTED])
    more = len(problems) - _MAX_REPORTED
    raise UserError(
      f'Architecture mismatch: {shown}{f"; and {more} more" if more > 0 else ""}. '
      'Set --config.num_filters/num_classes/num_channels/depth/model/sharp_kernel '
      'to match the Keras model.'
    )


def _concat_order(layers, by_kind, depth: int) -> tuple[set[str], list[str]]:
  """Decoder convs fed by concat([skip, upsampled]) instead of the usual order.

  Returns:
    The Flax paths of the decoder's first convolutions whose input channels
    must be swapped, and problems with the concatenations.
  """
  up_names = {x.name for x in by_kind['Conv2DTranspose']}
  concats = [x for x in layers if x.kind == 'Concatenate']
  swapped, problems = set(), []
  if len(concats) != depth:
    problems.append(
      f'the Keras model has {len(concats)} Concatenate layers, not {depth}'
    )
    return swapped, problems
  for index, layer in enumerate(concats):
    where = f"layer '{layer.name}' (Concatenate)"
    if layer.config.get('axis', -1) not in (-1, 3):
      problems.append(f'{where} joins axis {layer.config.get("axis")}, not channels')
    ups = [i for i, name in enumerate(layer.inbound) if name in up_names]
    if len(layer.inbound) != 2 or len(ups) != 1:
      problems.append(f'{where} joins {list(layer.inbound)}, not [upsampled, skip]')
    elif ups[0] == 1:
      swapped.add(f'decoder_{depth - 1 - index}/Conv_0')
  return swapped, problems


def _check_sharp_layers(layers, kernel: np.ndarray, channels: list[int]) -> list[str]:
  """Problems of the frozen depthwise layers: kernel values and channel counts."""
  problems = []
  for layer in layers:
    problems += _check_layer(layer, 3, 1, {'linear'})
    weights = layer.weights.get('kernel')
    where = f"layer '{layer.name}' (DepthwiseConv2D)"
    if weights is None or weights.ndim != 4 or weights.shape[-1] != 1:
      problems.append(f'{where} kernel {_shape(weights)} is not (3, 3, C, 1)')
      continue
    bias = layer.weights.get('bias')
    if bias is not None and np.any(bias != 0):
      problems.append(f'{where} has a non-zero bias')
    per_channel = np.moveaxis(weights[..., 0], -1, 0)
    if per_channel.shape[1:] != kernel.shape or not np.allclose(
      per_channel, kernel, atol=1e-6
    ):
      problems.append(
        f'{where} kernel differs from the config sharp_kernel {kernel.tolist()}'
      )
  found = sorted(
    int(x.weights['kernel'].shape[2]) for x in layers if 'kernel' in x.weights
  )
  if len(found) == len(layers) and found != channels:
    problems.append(
      f'the DepthwiseConv2D layers have {found} channels, expected {channels}'
    )
  return problems


def _path_name(path) -> str:
  return '/'.join(str(getattr(key, 'key', key)) for key in path)


def convert(keras_model: str, config, workdir: str, use_keras: bool = True) -> dict:
  """Converts a Keras model file into a checkpoint in `workdir`.

  Args:
    keras_model: path of the .h5 or .keras file.
    config: the training config whose model the weights are loaded into.
    workdir: the folder to write config.json and checkpoints/0 to; it must not
      hold checkpoints yet.
    use_keras: load with Keras first (False: read an .h5 with h5py only).

  Returns:
    The converted parameter tree, as numpy arrays.

  Raises:
    UserError: for an unreadable model, an architecture mismatch, a bad config
      or a workdir that already holds checkpoints.
  """
  trainer = train.Trainer(config)  # Checks the config first.
  workdir = workdirs.prepare(workdir)
  manager = checkpointing.create_manager(workdir, config.max_checkpoints_to_keep)
  if manager.latest_step() is not None:
    raise UserError(
      f'--workdir={workdir} already holds checkpoints; convert into a new folder.'
    )
  layers = read_keras_model(keras_model, use_keras=use_keras)
  target = restore.abstract_params(trainer.model, config)
  expected = {
    _path_name(path): leaf.shape
    for path, leaf in jax.tree_util.tree_leaves_with_path(target)
  }
  flat = convert_params(layers, config, expected)
  params = jax.tree_util.tree_map_with_path(
    lambda path, _: flat[_path_name(path)], target
  )
  # The fresh state of training (step 0, zero Adam moments) with the
  # converted parameters, so resuming and restoring see the usual layout.
  state = trainer.initial_state()
  state = state.replace(params=jax.device_put(params, trainer.replicated))
  workdirs.write_json_atomically(os.path.join(workdir, 'config.json'), config.to_dict())
  checkpointing.save(manager, 0, state, force=True)
  manager.wait_until_finished()
  manager.close()
  return params


def main(argv) -> None:
  """Command line entry point (see the module docstring)."""
  from absl import flags  # noqa: PLC0415

  del argv  # cli.run refuses positional arguments.
  flag_values = flags.FLAGS
  cli.warnings_only_by_default()
  if not flag_values.keras_model:
    raise UserError('--keras_model is required: the .h5 or .keras file to convert.')
  params = convert(flag_values.keras_model, flag_values.config, flag_values.workdir)
  count = sum(np.size(x) for x in jax.tree_util.tree_leaves(params))
  workdir = os.path.abspath(flag_values.workdir)
  print(
    f'Converted {flag_values.keras_model} ({count} parameters) into '
    f'{os.path.join(workdir, "checkpoints", "0")} with {workdir}/config.json.'
  )


def _define_flags() -> None:
  from absl import flags  # noqa: PLC0415
  from ml_collections import config_flags  # noqa: PLC0415

  flags.DEFINE_string('keras_model', None, 'The Keras .h5 or .keras model file.')
  flags.DEFINE_string('workdir', None, 'New folder for config.json and checkpoints.')
  config_flags.DEFINE_config_file(
    'config', None, 'Training config file (configs/*.py).', lock_config=True
  )
  flags.mark_flags_as_required(['config', 'workdir'])


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  _define_flags()
  cli.run(main)
