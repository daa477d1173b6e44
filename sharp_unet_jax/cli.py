"""Shared command-line plumbing: flag parsing and one-line user errors."""

import logging as pylogging
import re
import sys
import traceback
from typing import Callable, NoReturn

from absl import app, flags, logging

from sharp_unet_jax import quick_exit
from sharp_unet_jax.compilation import platforms
from sharp_unet_jax.errors import UserError


def exit_with_error(message: str) -> NoReturn:
  """Prints `error: message` as one line on stderr and exits with status 2.

  In a multi-process run the peers are told first, and the process exits at
  once: a normal exit would wait for peers that wait for it.
  """
  from sharp_unet_jax.training import failures  # noqa: PLC0415

  if failures.is_multiprocess():
    failures.fail(str(message), status=2)
  print(f'error: {" ".join(str(message).split())}', file=sys.stderr)
  sys.exit(2)


def _unexpected_error_in_multiprocess_run(error: Exception) -> NoReturn:
  """Blames a lost peer if there is one; else the trace, one line, status 1."""
  from sharp_unet_jax.training import failures, liveness  # noqa: PLC0415

  liveness.await_verdict()  # ends the process if a peer is gone
  traceback.print_exc()
  first_line = (str(error).splitlines() or [''])[0]
  failures.fail(
    f'{failures.process_name(failures.context.process_index)} stopped on an '
    f'unexpected error{failures.where()}: {type(error).__name__}: {first_line} '
    '(the trace is above).',
    status=1,
  )


def _config_key_error(error: Exception) -> str:
  text = str(error).replace('\\n', ' ').replace('\\', '')
  key = re.search(r"'(\w+)'", text)
  hint = re.search(r'Did you mean "(\w+)"', text)
  message = f'unknown config key {key.group(1)!r}' if key else text
  if hint:
    message += f' (did you mean {hint.group(1)!r}?)'
  return message + '; see the config file for the valid keys.'


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parser that turns config override errors into one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    exit_with_error(f'{str(e).rstrip(".")}. Pass --helpfull for the flags.')
  except (AttributeError, KeyError) as e:
    exit_with_error(_config_key_error(e))
  except (TypeError, ValueError) as e:
    exit_with_error(f'bad flag value: {e}')


def warnings_only_by_default() -> None:
  """Logs warnings only, unless the command line set --verbosity.

  For the programs whose work is mostly Orbax's and TensorFlow's, which log
  every step at INFO.
  """
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


class QuietLibraries(pylogging.Filter):
  """Drops the INFO chatter of Orbax and TFDS; their warnings still show."""

  def filter(self, record):
    noisy = ('/orbax/', '/tensorflow_datasets/')
    return record.levelno >= pylogging.WARNING or not any(
      part in record.pathname for part in noisy
    )


def _supervise_multiprocess_run() -> None:
  """With the distributed flags: run as a supervised child (training.supervisor).

  The parent exits here with the child's status; the child goes on.
  """
  from sharp_unet_jax.training import launch_flags, supervisor  # noqa: PLC0415

  if supervisor.is_child():
    supervisor.redirect_runtime_stderr()
  elif launch_flags.requested():
    values = flags.FLAGS.flag_values_dict()
    sys.exit(supervisor.run_child(values.get('workdir'), values.get('process_id')))


def run(main: Callable[[list[str]], None]) -> None:
  """Runs `main` like absl's app.run, reporting UserError as one line.

  The programs take flags only: a positional argument (often a flag's value
  cut off by the shell, or a flag without its `--`) is refused, as a
  UserError, before `main` runs. On a machine without a GPU or TPU, JAX is
  asked for the CPU only, which keeps the TPU and CUDA wheels from printing
  their start-up errors (compilation/platforms.py).
  """
  quick_exit.register()
  cpu_only = platforms.cpu_without_accelerators()

  def guarded(argv):
    logging.get_absl_handler().addFilter(QuietLibraries())
    if cpu_only:
      logging.info('No GPU or TPU device found: JAX_PLATFORMS=cpu (set it to choose).')
    _supervise_multiprocess_run()
    try:
      if len(argv) > 1:
        raise UserError(f'Unexpected arguments: {" ".join(argv[1:])}')
      main(argv)
    except UserError as e:
      exit_with_error(str(e))
    except Exception as e:
      from sharp_unet_jax.training import failures  # noqa: PLC0415

      if not failures.is_multiprocess():
        raise
      _unexpected_error_in_multiprocess_run(e)

  app.run(guarded, flags_parser=parse_flags)
