"""The command line: bad input gets one clear line, not a traceback."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args):
  return subprocess.run(
    [sys.executable, 'main.py', *args], cwd=REPO, capture_output=True, text=True
  )


def test_unknown_config_key_names_the_key(tmp_path):
  result = run_main(
    '--config=configs/tiny.py', f'--workdir={tmp_path}', '--config.num_filterz=8'
  )
  assert result.returncode != 0
  assert 'num_filterz' in result.stderr
  assert 'Traceback' not in result.stderr


def test_missing_workdir_is_reported():
  result = run_main('--config=configs/tiny.py')
  assert result.returncode != 0
  assert '--workdir' in result.stderr and 'Traceback' not in result.stderr


def test_batch_size_not_divisible_is_one_line(tmp_path):
  result = run_main(
    '--config=configs/tiny.py', f'--workdir={tmp_path}', '--config.batch_size=6'
  )
  assert result.returncode == 2
  assert 'Traceback' not in result.stderr
  error_lines = [
    line for line in result.stderr.splitlines() if line.startswith('error:')
  ]
  assert len(error_lines) == 1 and 'config.batch_size=6' in error_lines[0]


def test_image_size_not_divisible_is_one_line(tmp_path):
  result = run_main(
    '--config=configs/tiny.py', f'--workdir={tmp_path}', '--config.image_size=30,32'
  )
  assert result.returncode == 2
  assert 'error: Image sides must be divisible by 2**depth = 4' in result.stderr


def test_the_flags_and_a_multi_process_parent_need_no_jax():
  # A multi-process run's parent only parses the flags and starts its child
  # (training.supervisor), so that it starts it without JAX's imports.
  probe = (
    'import sys; sys.argv = ["main.py"]; import main; '
    'from sharp_unet_jax import cli; '
    'print(sorted({"jax", "tensorflow"} & set(sys.modules)))'
  )
  result = subprocess.run(
    [sys.executable, '-c', probe], cwd=REPO, capture_output=True, text=True
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ['[]'], result.stdout
