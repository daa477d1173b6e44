"""Draws the README's figure of what the Sharp block does, from the code itself.

  python -m sharp_unet_jax.figures --output=docs/sharp_block.png

The figure shows one synthetic_lesions image and the output of the Sharp block
with each named kernel, applied to its grey levels exactly as the model
applies it to every skip-connection channel.
"""

import os

from absl import flags
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw

from sharp_unet_jax import cli
from sharp_unet_jax.data.datasets import synthetic_lesions
from sharp_unet_jax.model import sharp_block


def _to_uint8(panel: np.ndarray, symmetric: bool) -> np.ndarray:
  """Scales a filter response to 0..255 (around mid-grey if it has both signs)."""
  if symmetric:
    scale = max(float(np.percentile(np.abs(panel), 99)), 1e-6)
    panel = 0.5 + 0.5 * np.clip(panel / scale, -1, 1)
  else:
    panel = (panel - panel.min()) / max(float(np.ptp(panel)), 1e-6)
  return np.round(panel * 255).astype(np.uint8)


def sharp_block_figure(index: int = 3, size: int = 192) -> Image.Image:
  """Returns a labelled strip: input, then laplacian, sharpen and blur outputs."""
  image, _ = synthetic_lesions.generate_example(
    synthetic_lesions.example_rng('test', index), size
  )
  grey = image.astype(np.float32).mean(axis=-1) / 255.0
  panels = [('input (grey)', np.round(grey * 255).astype(np.uint8))]
  for name in ('laplacian', 'sharpen', 'blur'):
    out = sharp_block.SharpBlock(kernel=name).apply(
      {}, jnp.asarray(grey)[None, ..., None]
    )
    panels.append((name, _to_uint8(np.asarray(out)[0, ..., 0], name == 'laplacian')))
  label_height = 22
  strip = Image.new('L', (size * len(panels), size + label_height), 255)
  draw = ImageDraw.Draw(strip)
  for i, (label, panel) in enumerate(panels):
    strip.paste(Image.fromarray(panel), (i * size, label_height))
    draw.text((i * size + 6, 5), label, fill=0)
  return strip


def main(argv):
  """Entry point of `python -m sharp_unet_jax.figures`."""
  del argv
  output = flags.FLAGS.output
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  sharp_block_figure().save(output)
  print(f'Wrote {output}')


if __name__ == '__main__':
  flags.DEFINE_string('output', 'docs/sharp_block.png', 'PNG file to write.')
  cli.run(main)
