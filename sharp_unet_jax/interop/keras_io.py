"""Reads the layers and weights of a Keras .h5 or .keras model file.

The file is loaded with `keras.models.load_model(compile=False)`; an .h5 file
that Keras cannot load (custom objects, an older Keras) is read directly with
h5py. The result is a framework-free list of layers in model order.
"""

import dataclasses
import json
import os
from typing import Any, Iterator

from absl import logging
import numpy as np

from sharp_unet_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class KerasLayer:
  """One layer of a Keras model, framework-free.

  Attributes:
    name: the Keras layer name.
    kind: the Keras class name, e.g. 'Conv2D'.
    config: the layer's Keras config (kernel_size, activation, ...).
    inbound: names of the layers feeding it, in argument order.
    weights: 'kernel' and 'bias' arrays (the depthwise kernel is 'kernel').
  """

  name: str
  kind: str
  config: dict
  inbound: tuple[str, ...]
  weights: dict[str, np.ndarray]


def _inbound_names(node: Any) -> Iterator[str]:
  """Source layer names in a Keras 2 or Keras 3 'inbound_nodes' entry."""
  if isinstance(node, dict):
    history = node.get('keras_history')
    if history:
      yield history[0]
      return
    for value in node.values():
      yield from _inbound_names(value)
  elif isinstance(node, (list, tuple)):
    # Keras 2: [layer_name, node_index, tensor_index, kwargs].
    if len(node) >= 3 and isinstance(node[0], str) and isinstance(node[1], int):
      yield node[0]
      return
    for value in node:
      yield from _inbound_names(value)


def _weight_role(weight_name: str) -> str:
  """'kernel' or 'bias' from names like 'conv2d/kernel:0' or 'bias'."""
  base = str(weight_name).split('/')[-1].split(':')[0]
  return 'bias' if base.endswith('bias') else 'kernel'


def _layers_from_config(model_config: dict, weights_of) -> list[KerasLayer]:
  # A saved file wraps the config as {'class_name': ..., 'config': {...}}.
  layers = model_config.get('config', model_config).get('layers')
  if not isinstance(layers, list):
    raise UserError('The Keras file holds no functional model config (layers).')
  result = []
  for entry in layers:
    config = entry.get('config', {})
    name = entry.get('name') or config.get('name')
    result.append(
      KerasLayer(
        name=name,
        kind=entry.get('class_name', '?'),
        config=config,
        inbound=tuple(_inbound_names(entry.get('inbound_nodes', []))),
        weights=weights_of(name),
      )
    )
  return result


def _read_with_keras(path: str) -> list[KerasLayer]:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import keras  # noqa: PLC0415

  model = keras.models.load_model(path, compile=False)
  by_name = {layer.name: layer for layer in model.layers}

  def weights_of(name):
    layer = by_name[name]
    return {
      _weight_role(w.path if hasattr(w, 'path') else w.name): np.asarray(w)
      for w in layer.weights
    }

  return _layers_from_config(model.get_config(), weights_of)


def _read_h5(path: str) -> list[KerasLayer]:
  """Reads an .h5 model (Keras 2 or Keras 3 legacy format) with h5py alone."""
  import h5py  # noqa: PLC0415

  with h5py.File(path, 'r') as f:
    if 'model_config' not in f.attrs:
      raise UserError(
        f'{path} holds weights only (no model config); save the full model '
        'with model.save(...) and convert that.'
      )
    raw = f.attrs['model_config']
    model_config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    group = f['model_weights'] if 'model_weights' in f else f

    def weights_of(name):
      if name not in group:
        return {}
      layer_group = group[name]
      names = layer_group.attrs.get('weight_names', [])
      return {
        _weight_role(n): np.asarray(
          layer_group[n.decode() if isinstance(n, bytes) else n]
        )
        for n in names
      }

    return _layers_from_config(model_config, weights_of)


def read_keras_model(path: str, use_keras: bool = True) -> list[KerasLayer]:
  """Reads the layers and weights of a Keras .h5 or .keras model file.

  Args:
    path: the model file.
    use_keras: load with Keras first; False reads an .h5 with h5py only.

  Raises:
    UserError: if the file is missing or cannot be read as a Keras model.
  """
  if not os.path.isfile(path):
    raise UserError(f'--keras_model={path} is not a file.')
  is_h5 = path.endswith(('.h5', '.hdf5'))
  if use_keras or not is_h5:
    try:
      return _read_with_keras(path)
    except UserError:
      raise
    except Exception as e:  # noqa: BLE001  (Keras raises many kinds of errors)
      reason = str(e).splitlines()[0] if str(e) else type(e).__name__
      if not is_h5:
        raise UserError(f'Keras cannot load {path}: {reason}') from e
      logging.warning('Keras cannot load %s (%s); reading it with h5py.', path, reason)
  try:
    return _read_h5(path)
  except (OSError, KeyError, ValueError, TypeError) as e:
    raise UserError(f'Cannot read {path} as a Keras model: {e}') from e
