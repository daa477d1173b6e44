"""Test session set-up: 4 simulated CPU devices, quiet TF, shared tiny data.

XLA_FLAGS must be set before JAX starts, so it is set here, before any test
module imports jax.
"""

import os
import tempfile

os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4'
)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# The TPU compile-only tests (aot_test.py) load libtpu in each pytest worker.
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
# One persistent XLA cache for the session, shared with the subprocesses the
# tests launch: the many runs of the tiny config compile once.
os.environ.setdefault(
  'JAX_COMPILATION_CACHE_DIR', tempfile.mkdtemp(prefix='sharp_unet_jax_xla_')
)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import pytest  # noqa: E402

NUM_DEVICES = 4


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory):
  """A TFDS data dir holding the built `synthetic_lesions/small` data set."""
  import tensorflow_datasets as tfds  # noqa: PLC0415

  import sharp_unet_jax.data.datasets  # noqa: F401, PLC0415

  data_dir = str(tmp_path_factory.mktemp('tfds'))
  tfds.builder('synthetic_lesions/small', data_dir=data_dir).download_and_prepare()
  return data_dir


@pytest.fixture
def tiny_config(tfds_dir):
  """configs/tiny.py reading the session's data dir."""
  from configs import tiny  # noqa: PLC0415

  config = tiny.get_config()
  config.data_dir = tfds_dir
  return config


# Modules whose module-scoped fixtures are expensive (main.py runs, compiled
# TPU programs), heaviest first. `make test` runs the suite with
# `--dist loadgroup`: each of these goes whole to one xdist worker, so its
# fixtures are built once, and first, so that the many short tests fill the
# other worker meanwhile and the run ends with short tests on both.
ONE_WORKER_MODULES = (
  'host_failure_test',
  'packed_training_test',
  'experiment_cv_test',
  'reliability_test',
  'aot_test',
  'experiment_test',
  'evaluate_test',
  'export_test',
  'predict_test',
  'inference_test',
)


def pytest_configure(config):
  # pytest-xdist's marker, named here too for runs without xdist (-p no:xdist).
  config.addinivalue_line('markers', 'xdist_group(name): run on one xdist worker')


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
  """Groups ONE_WORKER_MODULES' tests by module and moves them to the front."""
  rank = {name: i for i, name in enumerate(ONE_WORKER_MODULES)}

  def module_rank(item):
    return rank.get(item.module.__name__.rsplit('.', 1)[-1], len(rank))

  for item in items:
    if module_rank(item) < len(rank):
      item.add_marker(pytest.mark.xdist_group(item.module.__name__))
  items.sort(key=module_rank)  # stable: each module keeps its order
