"""`synthetic_lesions`: an embedded, dermoscopy-like lesion segmentation set.

The images are drawn in code, offline and deterministically, so the project
has a data set that needs no download and builds in seconds. Each example
shows skin of a per-image tone with uneven lighting, one irregular pigmented
lesion (brown, textured, with a pigment-network-like mesh and sometimes a
lighter regression area or a darker blotch), hairs crossing skin and lesion,
small freckles, vignetting or the black circular border of a dermatoscope
field, and sensor noise. The mask marks the lesion only: hair pixels over the
lesion stay lesion, freckles stay background, and lesion parts hidden by the
black field border are background.

A global grey-level threshold does poorly on it (dark borders, hair, light
lesions and lighting gradients), while the lesion is easy to see from colour,
texture and shape, so a small U-Net learns it.

Every example is a pure function of (split, index, image size): example `i`
of a split is identical in every config of that size and in every build, and
the `small` config is a prefix of `default`.

Usage::

  import tensorflow_datasets as tfds
  import sharp_unet_jax.data.datasets  # registers the builder
  tfds.builder('synthetic_lesions', data_dir=...).download_and_prepare()
  train = tfds.data_source('synthetic_lesions', split='train', data_dir=...)
  train[0]['image']  # examples by index (array_record files)
"""

import dataclasses
import io
from typing import Iterator

import numpy as np
from PIL import Image
from scipy import fft as scipy_fft
from scipy import ndimage
import tensorflow_datasets as tfds

from sharp_unet_jax.data.datasets import common

# Mixed into every example's seed; change it to get a different data set.
_SEED = 20210923
_SPLIT_IDS = {'train': 0, 'validation': 1, 'test': 2}

# Relative optical density of melanin per RGB channel: blue is absorbed most,
# so added pigment turns skin brown.
_MELANIN = np.array([0.55, 0.78, 1.0], np.float32)[:, None, None]
# Deep (dermal) pigment looks blue-grey: it absorbs all channels alike.
_DEEP_PIGMENT = np.array([0.95, 0.9, 0.8], np.float32)[:, None, None]


@dataclasses.dataclass
class SyntheticLesionsConfig(tfds.core.BuilderConfig):
  """Image size and split sizes of a `synthetic_lesions` config.

  Attributes:
    image_size: height and width of the square images in pixels.
    num_train: number of training examples.
    num_validation: number of validation examples.
    num_test: number of test examples.
  """

  image_size: int = 128
  num_train: int = 2000
  num_validation: int = 200
  num_test: int = 200


def _smooth_noise(
  rng: np.random.Generator, size: int, sigmas, outer_sigmas=None
) -> np.ndarray:
  """Returns smooth random fields with zero mean and unit std.

  The fields are white noise filtered with a Gaussian of the given scale
  (periodic boundaries). The noise is drawn directly in the Fourier domain and
  only at the frequencies the filter passes, which makes smooth fields cheap.

  Args:
    rng: random generator.
    size: side length of the square fields.
    sigmas: Gaussian smoothing scale in pixels, one per field.
    outer_sigmas: optional, one per field; where > 0 the field is band-passed
      instead: smoothed with sigma minus smoothed with the outer sigma.

  Returns:
    float32 array (len(sigmas), size, size).
  """
  if outer_sigmas is None:
    outer_sigmas = np.zeros(len(sigmas))
  fy = np.fft.fftfreq(size).astype(np.float32)[:, None]
  fx = np.fft.rfftfreq(size).astype(np.float32)[None, :]
  f2 = np.float32(-2.0 * np.pi**2) * (fy**2 + fx**2)
  fields = np.empty((len(sigmas), size, size), np.float32)
  for i, (sigma, outer) in enumerate(zip(sigmas, outer_sigmas)):
    # The Gaussian's response is below 1e-4 from 0.68 / sigma cycles/pixel.
    cols = min(fx.size, int(np.ceil(0.68 / sigma * size)) + 1)
    response = np.exp(f2[:, :cols] * np.float32(sigma**2))
    if outer > 0:
      response -= np.exp(f2[:, :cols] * np.float32(outer**2))
    # Uniform draws are 4x cheaper than Gaussian ones; summed over many
    # frequencies the field is Gaussian for all practical purposes.
    draws = rng.random((size, cols, 2), dtype=np.float32) - np.float32(0.5)
    spectrum = draws.view(np.complex64)[..., 0] * response
    # irfft zero-pads the missing high frequencies.
    fields[i] = scipy_fft.irfft(scipy_fft.ifft(spectrum, axis=0), n=size, axis=1)
  fields -= fields.mean(axis=(1, 2), keepdims=True)
  fields /= fields.std(axis=(1, 2), keepdims=True) + np.float32(1e-8)
  return fields


def _lesion_mask(
  rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, wobble: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Returns a bool mask of one irregular, contiguous blob and its level set.

  The blob is the region inside a radius r(theta) with random Fourier
  harmonics, plus a smooth-noise wobble of the boundary; only its largest
  connected component is kept, with holes filled.

  Args:
    rng: random generator.
    yy: float32 y coordinates in [-1, 1], (size, size).
    xx: float32 x coordinates in [-1, 1], (size, size).
    wobble: smooth unit-std noise field (size, size) that roughens the border.

  Returns:
    mask: bool (size, size).
    level: float32 (size, size); about 0 at the blob's centre, 1 on its border
      and growing outwards.
  """
  area_fraction = rng.uniform(0.05, 0.4)
  # The image spans [-1, 1]^2, area 4.
  radius = float(np.sqrt(4.0 * area_fraction / np.pi))
  stretch = float(np.sqrt(rng.uniform(0.75, 1.0)))
  angle = rng.uniform(0, np.pi)
  max_offset = 0.6 * max(0.05, 0.9 - radius)
  cy, cx = (float(c) for c in rng.uniform(-max_offset, max_offset, size=2))
  dy, dx = yy - cy, xx - cx
  # Rotated, stretched coordinates: an elliptical base shape.
  cos, sin = float(np.cos(angle)), float(np.sin(angle))
  u = (dx * cos + dy * sin) * stretch
  v = (dy * cos - dx * sin) / stretch
  rho = np.sqrt(u**2 + v**2) + np.float32(1e-6)
  # r(theta) / radius = 1 + sum_k a_k cos(k theta + phi_k), evaluated as the
  # real part of a_k e^{i phi_k} z^k with z = e^{i theta}.
  z = ((u + 1j * v) / rho).astype(np.complex64)
  power = z
  profile = np.ones_like(rho)
  for k in range(2, 8):
    power = power * z
    coefficient = rng.uniform(0.0, 0.22) / k**0.8 * np.exp(1j * rng.uniform(0, 7))
    profile += (np.complex64(coefficient) * power).real
  level = rho / (radius * profile) + rng.uniform(0.04, 0.12) * wobble
  mask = level < 1.0
  labels, count = ndimage.label(mask)
  if count > 1:
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = labels == np.argmax(sizes)
  # Fill holes: background parts that do not touch the image border.
  labels, count = ndimage.label(~mask)
  if count > 1:
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    mask = ~np.isin(labels, border[border > 0])
  return mask, level.astype(np.float32)


def _hair_alpha(rng: np.random.Generator, size: int) -> np.ndarray:
  """Returns the opacity (size, size) in [0, 1] of random curved hairs."""
  num_hairs = rng.choice(
    [0, rng.integers(1, 5), rng.integers(5, 16)], p=[0.3, 0.35, 0.35]
  )
  alpha = np.zeros((size, size), np.float32)
  if num_hairs == 0:
    return alpha
  # Quadratic Bezier curves: start, control and end point in pixels; hairs
  # are long and may start or end outside the image.
  start = rng.uniform(-0.2, 1.2, size=(num_hairs, 2)) * size
  direction = rng.uniform(0, 2 * np.pi, size=num_hairs)
  length = rng.uniform(0.4, 1.4, size=(num_hairs, 1)) * size
  tangent = np.stack([np.sin(direction), np.cos(direction)], axis=1)
  normal = np.stack([np.cos(direction), -np.sin(direction)], axis=1)
  end = start + length * tangent
  control = (start + end) / 2 + rng.normal(0.0, 0.25, (num_hairs, 1)) * length * normal
  s = np.linspace(0.0, 1.0, 4 * size)[None, :, None]
  points = (1 - s) ** 2 * start[:, None] + 2 * (1 - s) * s * control[:, None]
  points += s**2 * end[:, None]  # (num_hairs, steps, 2)
  # Thick hairs: a second stroke next to the first.
  width = rng.choice([0.0, 0.8, 1.3], size=(num_hairs, 1, 1), p=[0.6, 0.25, 0.15])
  points = np.concatenate([points, points + width * normal[:, None]], axis=1)
  darkness = rng.uniform(0.55, 0.95, size=(num_hairs, 1))
  weights = np.broadcast_to(darkness, points.shape[:2]).reshape(-1)
  iy, ix = np.round(points.reshape(-1, 2)).astype(np.int64).T
  keep = (iy >= 0) & (iy < size) & (ix >= 0) & (ix < size)
  np.maximum.at(alpha, (iy[keep], ix[keep]), weights[keep].astype(np.float32))
  return np.clip(ndimage.gaussian_filter(alpha, 0.6) * 1.6, 0.0, 1.0)


def _rgb(*values: float) -> np.ndarray:
  """Returns a colour as a float32 (3, 1, 1) array, to broadcast over CHW."""
  return np.array(values, np.float32)[:, None, None]


def _skin(rng, yy, xx, lighting, redness, grain) -> np.ndarray:
  """Skin (3, H, W): a tone from fair to brown with per-channel jitter, uneven
  lighting, patchy redness and a fine grain."""
  tone = rng.uniform(0.0, 1.0)
  skin_rgb = _rgb(236, 196, 178) + tone * _rgb(-60, -74, -84)
  skin_rgb += rng.normal(0.0, 8.0, (3, 1, 1)).astype(np.float32)
  gy, gx = (float(g) for g in rng.normal(0.0, 0.08, 2))
  light = 1.0 + gy * yy + gx * xx + 0.04 * lighting + 0.015 * grain
  skin = skin_rgb * light
  skin[1:] *= 1.0 - rng.uniform(0.0, 0.08) * np.maximum(redness, 0.0)
  return skin


def _lesion(rng, skin, level, texture, blotch, regression, network) -> np.ndarray:
  """The skin seen through the lesion's melanin: textured, darker towards the
  centre for some lesions, with a pigment network, and sometimes a blue-grey
  blotch or a regression area."""
  # 0 on the border, 1 at the centre.
  centre = np.clip(1.0 - level, 0.0, 1.0)
  centre /= max(float(centre.max()), 1e-3)
  inner = np.minimum(centre * 4.0, 1.0)
  depth = rng.uniform(0.35, 1.25)
  density = depth * (1.0 + rng.uniform(0.1, 0.3) * texture)
  # Darker towards the centre for some lesions, uniform for others.
  density *= 1.0 + rng.uniform(0.0, 0.5) * centre
  # Pigment network: a mesh of dark lines along the zero set of band-passed
  # noise, patchy across the lesion.
  mesh = np.exp(-((network / 0.35) ** 2)) * np.clip(0.7 + 0.6 * blotch, 0.0, 1.0)
  density += rng.uniform(0.1, 0.5) * depth * mesh
  od = density * _MELANIN
  if rng.uniform() < 0.45:
    # A dark blue-grey blotch.
    blot = np.clip((blotch - 0.8) * 1.5, 0.0, 1.0) * inner
    od += (rng.uniform(0.4, 0.9) * blot) * _DEEP_PIGMENT
  lesion = skin * np.exp(-od)
  if rng.uniform() < 0.35:
    # A lighter, pinkish-white regression area inside the lesion.
    whitening = np.clip((regression - 0.5) * 0.8, 0.0, 0.7) * inner
    lesion = skin * np.exp(-od * (1.0 - whitening)) + whitening * _rgb(30, 27, 28)
  return lesion


def _freckles(rng, level, size: int, scale: float) -> np.ndarray:
  """Melanin density (H, W) of small dark spots on the skin, off the lesion."""
  spots = np.zeros((size, size), np.float32)
  num_freckles = rng.integers(0, 9)
  candidates = np.flatnonzero(level > 1.35)
  if num_freckles and candidates.size:
    spots.flat[rng.choice(candidates, size=num_freckles)] = rng.uniform(
      0.5, 1.0, size=num_freckles
    )
    spots = ndimage.gaussian_filter(spots, rng.uniform(0.8, 1.6) * scale)
    spots *= rng.uniform(0.6, 1.0) / max(float(spots.max()), 1e-6)
  return spots


def _dermatoscope(rng, image, mask, yy, xx) -> tuple[np.ndarray, np.ndarray]:
  """Vignetting, sometimes with the black circular border of the dermatoscope
  (which hides the lesion under it)."""
  radius = np.sqrt(yy**2 + xx**2)
  image *= 1.0 - rng.uniform(0.1, 0.5) / 2.0 * radius**2
  if rng.uniform() < 0.55:
    field = rng.uniform(0.95, 1.35)
    softness = rng.uniform(0.02, 0.08)
    visible = 1.0 / (1.0 + np.exp((radius - field) / softness))
    border = _rgb(12, 10, 10) * rng.uniform(0.5, 2.0)
    image = border + visible * (image - border)
    mask &= visible > 0.5
  return image, mask


def generate_example(
  rng: np.random.Generator, size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
  """Draws one dermoscopy-like image and its lesion mask.

  Args:
    rng: random generator; the example is a pure function of its state.
    size: height and width in pixels.

  Returns:
    image: uint8 (size, size, 3) RGB.
    mask: uint8 (size, size, 1), 1 = lesion, 0 = background.
  """
  # Colour images are built channel-first: numpy broadcasts (3, 1, 1) colours
  # over (H, W) maps much faster than (3,) colours over (H, W, 1) maps.
  coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
  yy, xx = np.meshgrid(coords, coords, indexing='ij')
  scale = size / 128
  # Smooth random fields: lighting, redness, lesion border wobble, lesion
  # texture, blotches, regression areas, skin grain and pigment network.
  mesh_sigma = rng.uniform(1.4, 2.2) * scale
  sigmas = np.array([24, 14, 5, 3, 10, 8, 1.2, 0]) * scale
  sigmas[-1] = mesh_sigma
  outer = np.zeros_like(sigmas)
  outer[-1] = 2 * mesh_sigma
  fields = _smooth_noise(rng, size, sigmas, outer)
  lighting, redness, wobble, texture, blotch, regression, grain, network = fields

  skin = _skin(rng, yy, xx, lighting, redness, grain)
  # Lesion: melanin optical density, textured and with a soft border.
  mask, level = _lesion_mask(rng, yy, xx, wobble)
  alpha = ndimage.gaussian_filter(
    mask.astype(np.float32), rng.uniform(0.6, 2.5) * scale
  )
  lesion = _lesion(rng, skin, level, texture, blotch, regression, network)
  image = skin + alpha * (lesion - skin)
  image *= np.exp(-_freckles(rng, level, size, scale) * _MELANIN)
  # Hair: dark, on top of skin and lesion alike.
  hair = _hair_alpha(rng, size)
  image += hair * (_rgb(45, 32, 26) * rng.uniform(0.4, 1.2) - image)
  image, mask = _dermatoscope(rng, image, mask, yy, xx)

  # Sensor noise: uniform, scaled to a std of 1.5 to 6 grey levels.
  noise = rng.random(image.shape, dtype=np.float32) - 0.5
  image += rng.uniform(1.5, 6.0) * 12.0**0.5 * noise
  image = np.clip(np.round(image), 0, 255).astype(np.uint8).transpose(1, 2, 0)
  return np.ascontiguousarray(image), mask.astype(np.uint8)[..., None]


def example_rng(split: str, index: int) -> np.random.Generator:
  """Returns the generator that draws example `index` of `split`."""
  return np.random.default_rng([_SEED, _SPLIT_IDS[split], index])


class SyntheticLesions(tfds.core.GeneratorBasedBuilder):
  """Dermoscopy-like images of one pigmented skin lesion with binary masks."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
    SyntheticLesionsConfig(
      name='default',
      description='128x128 images; 2000 train, 200 validation, 200 test.',
    ),
    SyntheticLesionsConfig(
      name='small',
      description='128x128 images; 64 train, 16 validation, 16 test (tests).',
      num_train=64,
      num_validation=16,
      num_test=16,
    ),
  ]
  DEFAULT_CONFIG_NAME = 'default'

  def __init__(self, **kwargs):
    """Creates the builder; it writes `common.FILE_FORMAT` records by default."""
    kwargs.setdefault('file_format', common.FILE_FORMAT)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
      description=__doc__.split('\n\n')[1],
      features=tfds.features.FeaturesDict(
        {
          'id': tfds.features.Text(),
          'image': tfds.features.Image(
            shape=(size, size, 3), dtype=np.uint8, encoding_format='png'
          ),
          'mask': tfds.features.Image(
            shape=(size, size, 1), dtype=np.uint8, encoding_format='png'
          ),
        }
      ),
      supervised_keys=('image', 'mask'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    return {
      'train': self._generate_examples('train', config.num_train),
      'validation': self._generate_examples('validation', config.num_validation),
      'test': self._generate_examples('test', config.num_test),
    }

  def _generate_examples(self, split: str, count: int) -> Iterator:
    size = self.builder_config.image_size
    for index in range(count):
      image, mask = generate_example(example_rng(split, index), size)
      key = f'{split}_{index:05d}'
      # Encoded here with PIL: faster than the Image feature's TF encoder.
      yield key, {'id': key, 'image': _png(image), 'mask': _png(mask)}


def _png(array: np.ndarray) -> bytes:
  """Returns uint8 (H, W, C) `array` as PNG bytes (fast, lossless)."""
  if array.shape[-1] == 1:
    array = array[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='png', compress_level=1)
  return buffer.getvalue()
