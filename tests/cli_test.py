"""cli.run: the programs' shared entry point."""

import sys

import pytest

from sharp_unet_jax import cli


def test_positional_argument_is_refused_before_main(monkeypatch, capsys):
  calls = []
  monkeypatch.setattr(sys, 'argv', ['program', 'stray'])
  with pytest.raises(SystemExit) as exit_info:
    cli.run(calls.append)
  assert exit_info.value.code == 2
  assert calls == []
  assert 'error: Unexpected arguments: stray' in capsys.readouterr().err


def test_flags_only_reach_main(monkeypatch):
  calls = []
  monkeypatch.setattr(sys, 'argv', ['program'])
  with pytest.raises(SystemExit) as exit_info:  # app.run exits after main.
    cli.run(calls.append)
  assert exit_info.value.code in (None, 0)
  assert calls == [['program']]


def test_the_heap_is_frozen_after_the_programs_exit_handlers(tmp_path):
  """quick_exit: the last collection at exit skips the libraries' objects,
  and exit handlers registered before and after cli.run still run."""
  import subprocess  # noqa: PLC0415

  program = tmp_path / 'program.py'
  program.write_text(
    'import atexit, gc\n'
    "atexit.register(lambda: print('before', gc.get_freeze_count() > 0))\n"
    'from sharp_unet_jax import cli\n'
    "main = lambda _: atexit.register(lambda: print('after', gc.get_freeze_count()))\n"
    'cli.run(main)\n'
  )
  done = subprocess.run(
    [sys.executable, str(program)], capture_output=True, text=True, timeout=60
  )
  assert done.returncode == 0, done.stderr
  # atexit runs the last registered first: main's handler, then the freeze,
  # then the one registered before cli.run.
  assert done.stdout.split('\n')[:2] == ['after 0', 'before True']
