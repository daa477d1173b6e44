"""Test session set-up: 4 simulated CPU devices, quiet TF, shared tiny data.

XLA_FLAGS must be set before JAX starts, so it is set here, before any test
module imports jax.
"""

from importlib import metadata
import os
import tempfile

# The tests check what the programs compute, not how fast the compiled code
# runs, so XLA:CPU compiles them for compile time:
# - LLVM at -O0: the same HLO programs, with the same floating-point semantics,
#   in about 0.7x the CPU time (packed, NNX and tiled-inference tests,
#   measured side by side: 200 -> 142 CPU-s);
# - elementwise fusions by XLA's older LLVM IR emitters, not its MLIR fusion
#   emitters: the depth-4 tiny train step compiled in 2.6 against 8.3 CPU-s
#   (reference form) and 3.5 against 11.0 (packed form), side by side.
# The subprocesses the tests launch keep both (two_processes.xla_flags), the
# notebooks' kernels and export's fresh process too (with one device); only
# the benchmark command line, which times the programs, clears them.
# jaxlib 0.11 has no fusion-emitters flag, and an unknown flag in XLA_FLAGS
# stops XLA at start-up: it is passed to the jaxlibs that know it only.
OLDER_EMITTERS = ' --xla_cpu_use_fusion_emitters=false'
_JAXLIB = tuple(int(part) for part in metadata.version('jaxlib').split('.')[:2])
os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '')
  + ' --xla_backend_optimization_level=0'
  + (OLDER_EMITTERS if _JAXLIB < (0, 11) else '')
  + ' --xla_force_host_platform_device_count=4'
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

from sharp_unet_jax import quick_exit  # noqa: E402

quick_exit.register()  # each xdist worker ends without a sweep of its heap

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


# The heaviest modules (main.py runs, compiled TPU programs), heaviest first.
# `make test` runs the suite with `--dist loadfile`: each module goes whole to
# one xdist worker, so its module fixtures are built once, and modules are
# handed out in this order (`--no-loadscope-reorder`: xdist would otherwise
# hand out the modules with the most tests first), so that the long ones
# start first and the run ends on short ones on both workers.
HEAVIEST_FIRST = (
  'host_failure_test',
  'packed_training_test',
  'experiment_cv_test',
  'aot_test',
  'packed_test',
  'reliability_test',
  'experiment_test',
  'colabs_test',
  'plan_test',
  'evaluate_test',
  'export_test',
  'predict_test',
  'benchmark_test',
  'failure_detection_test',
  'fast_layers_test',
  'nnx_test',
  'train_test',
  'main_test',
  'convert_keras_test',
  'device_check_test',
)


def pytest_collection_modifyitems(items):
  """Orders the modules as HEAVIEST_FIRST, the others after them."""
  rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
  items.sort(
    key=lambda item: rank.get(item.module.__name__.rsplit('.', 1)[-1], len(rank))
  )
