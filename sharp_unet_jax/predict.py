r"""Predicts masks of images of any size with a trained model.

  python -m sharp_unet_jax.predict --workdir=DIR --input='scans/*.png' \
      --output_dir=OUT [--tile_size=64 --overlap=16 --tile_batch=4|auto \
      --blend=gaussian --tta=flips --save_probabilities --overlays \
      --checkpoint=latest|best|STEP]

--input is a file, a folder (its PNG, JPEG and TIFF files) or a glob pattern.
Each image is read like the training data (channels converted, scaled to
[0, 1]) and predicted by overlap-tile inference (see inference.py) at its own
resolution; no resizing is done, so feed images at the scale the model was
trained on. --tile_size defaults to config.image_size (the size the model
was trained at) and --overlap to a quarter of the smaller tile side, at most
32. Outputs, named after the input's sanitised stem:

  OUT/<stem>.png                 the mask: 0/255 (binary) or class indices
  OUT/probabilities/<stem>.tif   with --save_probabilities: float32, H x W
                                 (foreground) or H x W x K (all classes)
  OUT/overlays/<stem>.png        with --overlays: the image tinted by class

Two inputs with the same stem get '-2', '-3', ... appended.

On several processes (the distributed flags of main.py) the inputs are
shared out among them and each file is written by one process.

Exit status: 0 when every input was predicted; 1 when some inputs could not
be read: each is reported by name on stderr and skipped, and the masks of all
the others are still written; 2 for a usage error (bad flag, workdir or
checkpoint: nothing is written) or an output that cannot be written (the run
stops there).
"""

import dataclasses
import glob
import os
import sys
from typing import Optional, Sequence, Union

from absl import flags, logging
import jax
import numpy as np
from PIL import Image
import tifffile
import tqdm

from sharp_unet_jax import cli
from sharp_unet_jax.compilation import meshes
from sharp_unet_jax.data import image_io
from sharp_unet_jax.errors import BadDataError, UserError
from sharp_unet_jax.evaluation import inference, visualize
from sharp_unet_jax.training import distributed, launch_flags, restore
from sharp_unet_jax.training import tile_batch as auto_tiles

FLAGS = flags.FLAGS


@dataclasses.dataclass
class PredictReport:
  """What a prediction run did.

  Attributes:
    written: input path -> mask path, for every input predicted.
    skipped: input path -> reason, for every input that could not be read.
  """

  written: dict[str, str] = dataclasses.field(default_factory=dict)
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)


def parse_tile_size(value: Optional[str], default: Sequence[int]) -> tuple[int, int]:
  """'256' or '256,192' -> (height, width); None -> `default`.

  Raises:
    UserError: for anything else.
  """
  if value is None or not str(value).strip():
    return tuple(int(s) for s in default)
  try:
    sides = [int(s) for s in str(value).split(',')]
  except ValueError:
    sides = []
  if len(sides) not in (1, 2):
    raise UserError(f"--tile_size={value} must be 'SIDE' or 'HEIGHT,WIDTH'.")
  return (sides[0], sides[-1])


def parse_tile_batch(value) -> Union[int, str]:
  """A tile count (int) or 'auto'.

  Raises:
    UserError: for anything else.
  """
  text = str(value).strip().lower()
  if text == 'auto':
    return text
  if text.isdigit() and int(text) > 0:
    return int(text)
  raise UserError(f"--tile_batch={value} must be a positive number of tiles or 'auto'.")


def find_inputs(pattern: str) -> list[str]:
  """Expands --input into a sorted list of files.

  Raises:
    UserError: if nothing matches.
  """
  if not pattern:
    raise UserError('--input is required: an image file, folder or glob pattern.')
  if os.path.isdir(pattern):
    paths = [
      os.path.join(pattern, name)
      for name in os.listdir(pattern)
      if name.lower().endswith(image_io.IMAGE_SUFFIXES)
    ]
  elif glob.has_magic(pattern):
    paths = glob.glob(pattern, recursive=True)
  elif os.path.exists(pattern):
    paths = [pattern]
  else:
    raise UserError(f'--input={pattern}: no such file or folder.')
  paths = sorted(p for p in paths if os.path.isfile(p))
  if not paths:
    raise UserError(f'--input={pattern} matches no image files.')
  return paths


def _unique_stem(path: str, used: set[str]) -> str:
  base = image_io.safe_stem(os.path.splitext(os.path.basename(path))[0])
  stem, count = base, 1
  while stem.lower() in used:
    count += 1
    stem = f'{base}-{count}'
  used.add(stem.lower())
  return stem


def _save_png(array: np.ndarray, path: str) -> None:
  tmp = f'{path}.tmp.png'
  Image.fromarray(array).save(tmp)
  os.replace(tmp, path)


def _overlay(pixels: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """The image tinted by class, built a band of rows at a time."""
  out = np.empty((*labels.shape, 3), np.uint8)
  for r0 in range(0, labels.shape[0], 512):
    rows = slice(r0, r0 + 512)
    rgb = visualize.to_rgb(image_io.to_float(pixels[rows]))
    out[rows] = visualize.overlay(rgb, labels[rows])
  return out


def _write_outputs(
  pixels, probabilities, num_classes: int, output_dir: str, stem: str, options
) -> str:
  labels = inference.to_labels(probabilities, num_classes)
  mask_path = image_io.output_path(output_dir, stem, '.png')
  _save_png(labels * np.uint8(255) if num_classes == 1 else labels, mask_path)
  if options.get('save_probabilities'):
    folder = os.path.join(output_dir, 'probabilities')
    os.makedirs(folder, exist_ok=True)
    if num_classes == 1:
      values = probabilities[..., 0]
    else:
      values = inference.all_classes(probabilities)
    tifffile.imwrite(image_io.output_path(folder, stem, '.tif'), values)
  if options.get('overlays'):
    folder = os.path.join(output_dir, 'overlays')
    os.makedirs(folder, exist_ok=True)
    _save_png(_overlay(pixels, labels), image_io.output_path(folder, stem, '.png'))
  return mask_path


def predict_files(
  workdir: str,
  inputs: str,
  output_dir: str,
  *,
  checkpoint: str = 'latest',
  tile_size: Optional[str] = None,
  overlap: Optional[int] = None,
  tile_batch: Union[int, str] = 4,
  blend: str = 'gaussian',
  tta: str = 'none',
  save_probabilities: bool = False,
  overlays: bool = False,
  progress: bool = True,
  mesh=None,
) -> PredictReport:
  """Predicts a mask for every input image; unreadable inputs are skipped.

  Args:
    workdir: the training workdir.
    inputs: an image file, a folder or a glob pattern.
    output_dir: where the masks go (created if needed).
    checkpoint: 'latest', 'best' or a step number.
    tile_size: 'SIDE' or 'HEIGHT,WIDTH'; None: the config's image_size.
    overlap, blend, tta: as `inference.TiledPredictor` takes them.
    tile_batch: tiles per model call, or 'auto' (tile_batch.auto_tile_batch:
      the most that fit the devices at hand, by compiling).
    save_probabilities: also write float32 probability TIFFs.
    overlays: also write tinted images.
    progress: show a progress bar over files.
    mesh: the ('data',) mesh tile batches are split over; None: the default
      device alone.

  Returns:
    Which inputs were written and which were skipped, and why.

  Raises:
    UserError: for a bad workdir, checkpoint, setting or output folder.
  """
  if not output_dir:
    raise UserError('--output_dir is required: the folder for the masks.')
  paths = find_inputs(inputs)
  tile_batch = parse_tile_batch(tile_batch)
  mesh = meshes.data_mesh(jax.local_devices()[:1]) if mesh is None else mesh
  restored = restore.load(workdir, checkpoint).for_platform(
    meshes.platform(mesh), mesh.devices.flat[0]
  )
  settings = dict(overlap=overlap, tile_batch=tile_batch, blend=blend, tta=tta)
  predictor = _make_predictor(restored, mesh, tile_size, **settings)
  logging.info('Predicting %d images with %s', len(paths), restored.checkpoint)
  image_io.make_output_dir(output_dir)
  options = {'save_probabilities': save_probabilities, 'overlays': overlays}
  return _predict_all(predictor, restored.config, paths, output_dir, options, progress)


def _make_predictor(restored, mesh, tile_size, *, overlap, tile_batch, blend, tta):
  """The tiled predictor of `restored`; tile_batch='auto' is resolved by compiling."""
  auto = tile_batch == 'auto'
  predictor = inference.TiledPredictor(
    restored.apply,
    restored.params,
    num_classes=restored.config.num_classes,
    depth=restored.config.depth,
    tile_size=parse_tile_size(tile_size, restored.config.image_size),
    overlap=overlap,
    tile_batch=mesh.size if auto else tile_batch,
    blend=blend,
    tta=tta,
    mesh=mesh,
  )
  if auto:  # after the predictor has checked the settings
    predictor.tile_batch = auto_tiles.auto_tile_batch(
      restored.apply,
      restored.params,
      num_classes=restored.config.num_classes,
      tile_size=predictor.tile_size,
      channels=restored.config.num_channels,
      tta=tta,
      mesh=mesh,
    )
  return predictor


def _predict_all(
  predictor, config, paths, output_dir: str, options, progress: bool
) -> PredictReport:
  """Predicts this process's share of `paths`, each named after its stem."""
  report, used = PredictReport(), set()
  # Stems are given in the order of all inputs, then each process predicts
  # its share of them: every file is written once, by one process.
  stems = distributed.process_share([(p, _unique_stem(p, used)) for p in paths])
  bar = tqdm.tqdm(stems, unit='image', disable=not progress, file=sys.stderr)
  for path, stem in bar:
    _predict_file(predictor, config, path, stem, output_dir, options, report)
  return report


def _predict_file(
  predictor, config, path: str, stem: str, output_dir: str, options, report
) -> None:
  """Predicts one input into `report`: written, or skipped if unreadable.

  Raises:
    UserError: if its outputs cannot be written.
  """
  try:
    pixels = image_io.read_image(path, config.num_channels)
  except BadDataError as e:
    report.skipped[path] = str(e)
    tqdm.tqdm.write(f'skipped {path}: {e}', file=sys.stderr)
    return
  probabilities = predictor.predict(pixels)
  try:
    report.written[path] = _write_outputs(
      pixels, probabilities, config.num_classes, output_dir, stem, options
    )
  except OSError as e:
    raise UserError(f'Cannot write the outputs of {path}: {e}.') from e


def define_flags() -> None:
  """Defines the command's flags (only when run as a program)."""
  flags.DEFINE_string(
    'workdir', None, 'Training workdir holding config.json and checkpoints.'
  )
  flags.DEFINE_string('input', None, 'Image file, folder of images, or glob pattern.')
  flags.DEFINE_string('output_dir', None, 'Folder for the masks (created if needed).')
  flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' or a step number.")
  flags.DEFINE_string(
    'tile_size', None, "Tile 'SIDE' or 'HEIGHT,WIDTH'; default: config.image_size."
  )
  flags.DEFINE_integer(
    'overlap',
    None,
    'Pixels shared by neighbouring tiles; default: a quarter of the smaller '
    'tile side, at most 32.',
  )
  flags.DEFINE_string(
    'tile_batch',
    '4',
    "Tiles per model call, or 'auto': the most that fit 90 % of the device's "
    "memory by XLA's memory analysis of the compiled tile function (logged).",
  )
  flags.DEFINE_enum('blend', 'gaussian', inference.BLENDS, 'Tile blending weights.')
  flags.DEFINE_enum('tta', 'none', inference.TTAS, 'Test-time augmentation.')
  flags.DEFINE_bool(
    'save_probabilities', False, 'Also write float32 TIFF probabilities.'
  )
  flags.DEFINE_bool('overlays', False, 'Also write the images tinted by class.')
  launch_flags.define()
  flags.mark_flags_as_required(['workdir', 'input', 'output_dir'])


def main(argv) -> None:
  """Entry point of `python -m sharp_unet_jax.predict`."""
  del argv  # cli.run refuses positional arguments.
  distributed.initialize()
  report = predict_files(
    FLAGS.workdir,
    FLAGS.input,
    FLAGS.output_dir,
    checkpoint=FLAGS.checkpoint,
    tile_size=FLAGS.tile_size,
    overlap=FLAGS.overlap,
    tile_batch=FLAGS.tile_batch,
    blend=FLAGS.blend,
    tta=FLAGS.tta,
    save_probabilities=FLAGS.save_probabilities,
    overlays=FLAGS.overlays,
  )
  total = len(report.written) + len(report.skipped)
  print(f'Wrote {len(report.written)} of {total} masks to {FLAGS.output_dir}.')
  # On several processes each reports the inputs it was given.
  if report.skipped:
    names = ', '.join(report.skipped)
    print(
      f'error: {len(report.skipped)} of {total} inputs could not be read and were '
      f'skipped: {names}',
      file=sys.stderr,
    )
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
