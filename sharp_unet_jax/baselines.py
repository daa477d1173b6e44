"""Non-learned segmentation baselines: a global Otsu threshold.

Lesions are darker than the skin around them, so the simplest segmenter
thresholds the grey image at Otsu's threshold and calls the dark side lesion.
A data set on which this scores close to a trained U-Net is too easy.

Run as a module to score it on a TFDS split (built on first use):

  python -m sharp_unet_jax.baselines --data_dir=/tmp/tfds --split=test

The last line printed is `otsu_dice=0.xxxx`.
"""

import os
from typing import Sequence

from absl import flags
import numpy as np
from skimage import color, filters

from sharp_unet_jax import cli
from sharp_unet_jax.evaluation import overlap


def define_flags() -> None:
  """Defines the command's flags (only when run as a program, not on import)."""
  flags.DEFINE_string(
    'dataset',
    'synthetic_lesions',
    'TFDS name (with optional /config) of a segmentation data set with `image` '
    'and `mask` features; mask > 0 is foreground.',
  )
  flags.DEFINE_string('data_dir', None, 'TFDS data directory.')
  flags.DEFINE_string('split', 'test', 'Split to score.')


def grey(image: np.ndarray) -> np.ndarray:
  """Returns a float grey image (H, W) of an (H, W), (H, W, 1) or RGB image."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 3:
    return color.rgb2gray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim != 2:
    raise ValueError(f'Expected an (H, W[, 1 or 3]) image, got {image.shape}.')
  return image.astype(np.float64)


def otsu_segment(image: np.ndarray) -> np.ndarray:
  """Returns the bool (H, W) mask of pixels at or below the Otsu threshold.

  Args:
    image: (H, W), (H, W, 1) or (H, W, 3) image of any numeric dtype.
  """
  g = grey(image)
  if g.min() == g.max():
    # Nothing to separate: call it all background.
    return np.zeros(g.shape, bool)
  return g <= filters.threshold_otsu(g)


def dice(prediction: np.ndarray, target: np.ndarray) -> float:
  """Returns the Dice coefficient of two bool masks; 1.0 if both are empty."""
  return float(overlap.dice(*overlap.counts(prediction, target)))


def otsu_dice(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
  """Returns the mean per-image Dice of a global Otsu threshold.

  Each image is converted to grey and thresholded at its own Otsu threshold;
  the darker side is the predicted foreground.

  Args:
    images: N images (H, W[, C]), or an array (N, H, W[, C]).
    masks: N masks (H, W[, 1]), or an array (N, H, W[, 1]); > 0 is foreground.

  Returns:
    The mean Dice over the N images.

  Raises:
    ValueError: if there are no images, or images and masks differ in number
      or size.
  """
  if len(images) != len(masks):
    raise ValueError(f'{len(images)} images but {len(masks)} masks.')
  if len(images) == 0:
    raise ValueError('No images to score.')
  scores = []
  for image, mask in zip(images, masks):
    mask = np.asarray(mask)
    if mask.ndim == 3:
      mask = mask[..., 0]
    prediction = otsu_segment(image)
    if prediction.shape != mask.shape:
      raise ValueError(
        f'Image of size {prediction.shape} but mask of size {mask.shape}.'
      )
    scores.append(dice(prediction, mask > 0))
  return float(np.mean(scores))


def load_split(name: str, split: str, data_dir: str | None):
  """Builds (if needed) and loads a TFDS split as numpy (images, masks)."""
  import tensorflow_datasets as tfds

  from sharp_unet_jax.data import data_source  # Registers the builders.

  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare()
  data = data_source.stacked(builder, split)
  return data['image'], data['mask']


def main(argv: Sequence[str]) -> None:
  """Entry point of `python -m sharp_unet_jax.baselines`."""
  del argv  # cli.run refuses positional arguments.
  args = flags.FLAGS
  images, masks = load_split(args.dataset, args.split, args.data_dir)
  score = otsu_dice(images, masks)
  print(f'{args.dataset} {args.split}: {len(images)} images')
  print(f'otsu_dice={score:.4f}')


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  define_flags()
  cli.run(main)
