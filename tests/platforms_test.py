"""Tests of the quiet CPU-only start (compilation/platforms.py)."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from sharp_unet_jax.compilation import platforms

ROOT = pathlib.Path(__file__).resolve().parents[1]


def fake_root(tmp_path, *nodes):
  """A file system root whose /dev holds `nodes`."""
  for node in nodes:
    path = tmp_path / node.lstrip('/')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
  return str(tmp_path)


def test_without_accelerators_jax_is_asked_for_the_cpu(tmp_path):
  environ = {'PATH': '/bin'}
  root = fake_root(tmp_path, '/dev/null', '/dev/vfio/vfio')
  assert platforms.cpu_without_accelerators(environ, root, 'linux')
  assert environ == {'PATH': '/bin', 'JAX_PLATFORMS': 'cpu'}


@pytest.mark.parametrize(
  'node',
  [
    '/dev/nvidia0',
    '/dev/nvidia3',
    '/dev/nvidiactl',
    '/dev/dxg',
    '/dev/kfd',
    '/dev/accel0',
    '/dev/vfio/0',
  ],
)
def test_an_accelerator_node_leaves_the_platforms_to_jax(tmp_path, node):
  environ = {}
  assert not platforms.cpu_without_accelerators(
    environ, fake_root(tmp_path, node), 'linux'
  )
  assert environ == {}


def test_the_users_choice_and_other_systems_are_left_alone(tmp_path):
  environ = {'JAX_PLATFORMS': 'cuda'}
  assert not platforms.cpu_without_accelerators(environ, str(tmp_path), 'linux')
  assert environ == {'JAX_PLATFORMS': 'cuda'}
  environ = {}
  assert not platforms.cpu_without_accelerators(environ, str(tmp_path), 'darwin')
  assert environ == {}


NOISY_WHEELS = ('libtpu', 'jax_cuda12_plugin')
NOISE = ('Unable to load CUDA', 'cuInit', 'TPU_WORKER_HOSTNAMES', 'Traceback')


@pytest.mark.skipif(
  not any(importlib.util.find_spec(m) for m in NOISY_WHEELS),
  reason='neither libtpu nor the CUDA plugin is installed: nothing to quiet',
)
@pytest.mark.skipif(
  bool(platforms.accelerator_nodes()), reason='this machine has an accelerator'
)
def test_a_program_starts_quietly_where_the_accelerator_wheels_have_no_hardware():
  # A program's start as main.py's: cli.run, then JAX's first devices.
  code = (
    'import jax; from sharp_unet_jax import cli; '
    'cli.run(lambda argv: print(jax.devices()))'
  )
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  done = subprocess.run(
    [sys.executable, '-c', code],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=ROOT,
    env=env,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert 'CpuDevice' in done.stdout
  assert [n for n in NOISE if n in done.stderr] == [], done.stderr[-3000:]
  assert 'No GPU or TPU device found: JAX_PLATFORMS=cpu' in done.stderr
