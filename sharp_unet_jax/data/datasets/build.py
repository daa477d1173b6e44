r"""Builds the project's data sets: `tfds build` with the builders registered.

Usage (from the repository root)::

  python -m sharp_unet_jax.data.datasets.build --manual_dir=DIR [--data_dir=D] NAME
  python -m sharp_unet_jax.data.datasets.build --manual_dir=DIR \
      'NAME/skip_bad_files=True'

It takes every flag of `tfds build` and runs TFDS' own build command, like
`tfds build --imports sharp_unet_jax.data.datasets ...`, but prints a data error
(`UserError`) as one line and exits with status 2 instead of a traceback.
"""

import sys

from absl import app, logging
from tensorflow_datasets.scripts.cli import build as tfds_build
from tensorflow_datasets.scripts.cli import cli_utils

import sharp_unet_jax.data.datasets  # noqa: F401  (registers the builders)
from sharp_unet_jax.errors import UserError


def main(args: tfds_build.Args) -> None:
  """Runs `tfds build` with the parsed `args`; exits 2 on a UserError."""
  logging.set_verbosity(logging.INFO)
  try:
    args.execute()
  except UserError as e:
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(
    main,
    flags_parser=cli_utils.make_flags_parser(
      tfds_build.Args, description='Builds a data set (tfds build).'
    ),
  )
