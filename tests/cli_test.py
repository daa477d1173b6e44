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
