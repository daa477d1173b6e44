"""The paper's Keras U-Net / Sharp U-Net, as a peer for speed and weight import.

This mirrors the authors' Keras code (see /work/shared/PAPER.md): per encoder
level two 3x3 'same' convolutions with ReLU and a 2x2 max-pool; a bottleneck of
two 3x3 convolutions; per decoder level a 2x2 stride-2 Conv2DTranspose ('same',
no activation), a concatenation [upsampled, skip] and two 3x3 convolutions; a
1x1 head. In Sharp U-Net each skip first passes a DepthwiseConv2D 3x3 with one
fixed, non-trainable kernel (centre 8, neighbours -1) copied to every channel.

Layer names follow the Flax module paths of `sharp_unet_jax.model.models.UNet`
(`encoder_0/Conv_0`, ...) with '/' written as '_', so a weight importer can map
them one to one:

  model = build_keras_unet((128, 128, 3), num_classes=1)
  model.get_layer('encoder_0_Conv_0').kernel   # (3, 3, 3, 32), HWIO like Flax

Importing this module imports TensorFlow and Keras 3; nothing else in the
package needs them at import time.
"""

import os

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import keras  # noqa: E402

# Centre +8, all eight neighbours -1: the kernel of the paper's results.
LAPLACIAN = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32)


def _conv_pair(x, features: int, name: str):
  """Two 3x3 'same' convolutions with ReLU, named like Flax's ConvPair."""
  for i in range(2):
    x = keras.layers.Conv2D(
      features,
      3,
      padding='same',
      activation='relu',
      kernel_initializer='glorot_uniform',
      name=f'{name}_Conv_{i}',
    )(x)
  return x


def _sharp_block(x, name: str, kernel: np.ndarray = LAPLACIAN):
  """Depthwise 3x3 'same' filter with a frozen kernel shared by all channels."""
  channels = x.shape[-1]
  weights = np.broadcast_to(kernel[:, :, None, None], (3, 3, channels, 1))
  layer = keras.layers.DepthwiseConv2D(
    3,
    padding='same',
    use_bias=False,
    depthwise_initializer=keras.initializers.Constant(np.array(weights)),
    trainable=False,
    name=name,
  )
  return layer(x)


def build_keras_unet(
  input_shape,
  num_classes: int,
  num_filters: int = 32,
  depth: int = 4,
  sharp: bool = True,
  output_activation: str = 'paper',
) -> keras.Model:
  """Builds the paper's (Sharp) U-Net as a functional Keras model.

  Args:
    input_shape: (height, width, channels); sides divisible by 2**depth.
    num_classes: 1 for binary segmentation, K > 1 for K classes.
    num_filters: channels of the first level; level i has num_filters * 2**i.
    depth: number of pooling levels (4 in the paper).
    sharp: True for Sharp U-Net (Laplacian skip filter), False for U-Net.
    output_activation: 'paper' applies the paper's head activation (sigmoid
      for one class, softmax otherwise); None returns logits like the Flax
      model.

  Returns:
    An uncompiled `keras.Model` named 'sharp_unet' or 'unet'.

  Raises:
    ValueError: if a side is not divisible by 2**depth.
  """
  height, width = input_shape[0], input_shape[1]
  factor = 2**depth
  if height % factor or width % factor:
    raise ValueError(
      f'Image sides must be divisible by 2**depth = {factor}; got {height}x{width}.'
    )
  inputs = keras.Input(shape=tuple(input_shape), name='image')
  x = inputs
  skips = []
  for level in range(depth):
    x = _conv_pair(x, num_filters * 2**level, f'encoder_{level}')
    skips.append(x)
    x = keras.layers.MaxPooling2D(2, name=f'pool_{level}')(x)
  x = _conv_pair(x, num_filters * 2**depth, 'bottleneck')

  for level in reversed(range(depth)):
    x = _decoder_level(x, skips[level], num_filters * 2**level, level, sharp)
  activation = _head_activation(output_activation, num_classes)
  outputs = keras.layers.Conv2D(num_classes, 1, activation=activation, name='head')(x)
  return keras.Model(inputs, outputs, name='sharp_unet' if sharp else 'unet')


def _decoder_level(x, skip, features: int, level: int, sharp: bool):
  """Up-convolution, the (sharpened) skip concatenated, then two convs."""
  x = keras.layers.Conv2DTranspose(
    features,
    2,
    strides=2,
    padding='same',
    kernel_initializer='glorot_uniform',
    name=f'upsample_{level}',
  )(x)
  if sharp:
    skip = _sharp_block(skip, f'sharp_{level}')
  x = keras.layers.Concatenate(axis=-1, name=f'concat_{level}')([x, skip])
  return _conv_pair(x, features, f'decoder_{level}')


def _head_activation(output_activation, num_classes: int):
  """The head's activation: the paper's (sigmoid or softmax), or None."""
  if output_activation == 'paper':
    return 'sigmoid' if num_classes == 1 else 'softmax'
  if output_activation is not None:
    raise ValueError(
      f"output_activation must be 'paper' or None, got {output_activation!r}."
    )
  return None


def compile_like_paper(model: keras.Model, num_classes: int, **compile_kwargs):
  """Compiles with the paper's Adam(1e-3, eps 1e-7) and cross-entropy loss.

  The loss matches the head: probabilities for output_activation='paper'.
  Extra keyword arguments (e.g. jit_compile) go to `model.compile`.
  """
  from_logits = model.layers[-1].activation is keras.activations.linear
  if num_classes == 1:
    loss = keras.losses.BinaryCrossentropy(from_logits=from_logits)
  else:
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
  model.compile(
    optimizer=keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-7),
    loss=loss,
    **compile_kwargs,
  )
  return model
