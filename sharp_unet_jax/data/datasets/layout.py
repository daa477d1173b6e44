"""Finding a data set's files in the manual folder, tolerant of mirrors' layouts.

Folder and file names match ignoring case, spaces, '-' and '_' (so
`Ground Truth`, `GroundTruth` and `ground_truth` are one name) and may sit up to
two folders deep (e.g. `DIR/CVC-ClinicDB/Original`). Images and masks pair by
file stem, whatever their extensions.
"""

import pathlib
import re

from absl import logging

from sharp_unet_jax.data.datasets import common
from sharp_unet_jax.errors import BadDataError

IMAGE_SUFFIXES = frozenset({'.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp', '.gif'})


def normalize_name(name: str) -> str:
  """Returns `name` lower-cased without spaces, '-' and '_'."""
  return re.sub(r'[\s_\-]', '', name).lower()


def _visible_children(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.iterdir() if not p.name.startswith('.'))


def _find(
  root: pathlib.Path, names, want_dir: bool, max_depth: int
) -> pathlib.Path | None:
  """Breadth-first search for the shallowest entry named like one of `names`."""
  wanted = {normalize_name(n) for n in names}
  level = [root]
  for _ in range(max_depth + 1):
    found, deeper = [], []
    for folder in level:
      for child in _visible_children(folder):
        if child.is_dir():
          deeper.append(child)
        if child.is_dir() == want_dir and normalize_name(child.name) in wanted:
          found.append(child)
    if len(found) > 1:
      raise BadDataError(
        f'several {"folders" if want_dir else "files"} match {" / ".join(names)}: '
        f'{common.format_values(found)}; keep one'
      )
    if found:
      return found[0]
    level = deeper
  return None


def find_dir(root: pathlib.Path, names, max_depth: int = 2) -> pathlib.Path | None:
  """Returns the folder under `root` named like one of `names`, or None.

  Args:
    root: the folder to search below (`root` itself never matches).
    names: accepted names; matched ignoring case, spaces, '-' and '_'.
    max_depth: how many folder levels below `root` to search.

  Raises:
    BadDataError: several folders match at the same depth.
  """
  return _find(root, names, want_dir=True, max_depth=max_depth)


def find_file(root: pathlib.Path, names, max_depth: int = 2) -> pathlib.Path | None:
  """Returns the file under `root` named like one of `names`, or None.

  Raises:
    BadDataError: several files match at the same depth.
  """
  return _find(root, names, want_dir=False, max_depth=max_depth)


def list_images(folder: pathlib.Path) -> dict[str, common.SourceFile]:
  """Returns the image files in `folder` by file stem.

  Hidden files are ignored; other non-image files are ignored with a warning.

  Raises:
    BadDataError: two image files share a stem (e.g. `1.tif` and `1.png`).
  """
  images, others = {}, []
  for path in _visible_children(folder):
    if not path.is_file():
      continue
    if path.suffix.lower() not in IMAGE_SUFFIXES:
      others.append(path.name)
      continue
    if path.stem in images:
      raise BadDataError(
        f'{folder} holds several files named {path.stem}: '
        f'{images[path.stem].path.name} and {path.name}; keep one'
      )
    images[path.stem] = common.SourceFile(path)
  if others:
    logging.warning(
      'Ignoring %d file(s) in %s that are no images: %s',
      len(others),
      folder,
      common.format_values(others),
    )
  return images


def pair_by_stem(
  images: dict[str, common.SourceFile], masks: dict[str, common.SourceFile]
) -> tuple[list[tuple[str, common.SourceFile, common.SourceFile]], list, list]:
  """Pairs images and masks of the same stem.

  Args:
    images: image files by stem.
    masks: mask files by stem.

  Returns:
    (stem, image, mask) triples sorted by stem; the images without a mask; the
    masks without an image (both as SourceFiles sorted by stem).
  """
  pairs = [(s, images[s], masks[s]) for s in sorted(images.keys() & masks.keys())]
  lone_images = [images[s] for s in sorted(images.keys() - masks.keys())]
  lone_masks = [masks[s] for s in sorted(masks.keys() - images.keys())]
  return pairs, lone_images, lone_masks
