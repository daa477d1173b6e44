"""Pictures of predictions: image | ground truth | prediction panels."""

import numpy as np

# Colours of classes 1.. in overlays (class 0, the background, is not drawn).
CLASS_COLOURS = np.array(
  [[255, 64, 64], [64, 220, 64], [64, 128, 255], [255, 220, 0], [220, 0, 220]],
  np.float32,
)


def to_rgb(images: np.ndarray) -> np.ndarray:
  """Float images in [0, 1] with 1 or 3 channels -> uint8 RGB."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  return np.round(images[..., :3] * 255).astype(np.uint8)


def overlay(images: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
  """Tints every labelled pixel of uint8 RGB `images` with its class colour."""
  out = images.astype(np.float32)
  for index, colour in enumerate(CLASS_COLOURS, start=1):
    where = labels == index
    out[where] = (1 - alpha) * out[where] + alpha * colour
  return np.round(out).astype(np.uint8)


def comparison_panels(images, true_labels, predicted_labels) -> np.ndarray:
  """Side-by-side panels per example: image, truth overlay, prediction overlay.

  Args:
    images: (N, H, W, C) floats in [0, 1].
    true_labels: (N, H, W) class indices.
    predicted_labels: (N, H, W) class indices.

  Returns:
    uint8 array (N, H, 3 * W, 3).
  """
  rgb = to_rgb(images)
  return np.concatenate(
    [rgb, overlay(rgb, true_labels), overlay(rgb, predicted_labels)], axis=2
  )
