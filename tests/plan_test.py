"""The planner: the largest batch that fits, checked by compiling; the
command's output, cache and error; predict --tile_batch=auto.

The TPU test needs the compile-only wheels of requirements-aot.txt (`make
test` runs the suite in .venv-aot, which has them).
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image
from predict_test import workdir  # noqa: F401  a workdir to predict with
import pytest

from configs import tiny
from sharp_unet_jax import predict
from sharp_unet_jax.compilation import budgets, compile_reports, report_cache
from sharp_unet_jax.training import aot_steps, planning, tile_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config():
  """configs/tiny.py made quicker still to compile for a TPU."""
  config = tiny.get_config()
  config.depth, config.image_size = 1, (16, 16)
  return config


def train_peak(config, target, per_device: int) -> int:
  """The train step's peak bytes per device, compiled apart from the planner."""
  config = config.copy_and_resolve_references()
  config.batch_size = per_device * len(target.devices)
  return aot_steps.compile_all(config, target, steps=('train',))['train']['peak_bytes']


def test_on_a_v5e_the_chosen_batch_fits_and_the_next_does_not(tmp_path):
  target = budgets.resolve('tpu:v5e:2x2')
  config = small_config()
  config.dtype = 'float32'
  # A budget between the peaks of 1 and 2 images per device (about 0.45 and
  # 0.48 MB with libtpu 0.0.42; each libtpu plans its own): the search
  # compiles 2 (over) and 1 (fits), the fewest that prove the answer.
  one, two = (train_peak(config, target, n) for n in (1, 2))
  assert one < two
  budget = (one + two) // 2
  cache = report_cache.ReportCache(str(tmp_path))
  result = planning.Planner(config, target, cache).plan_train('float32', budget)
  assert (result.best.batch, result.first_misfit.batch) == (1, 2)
  assert not result.capped
  assert result.best.peak_bytes == one and result.first_misfit.peak_bytes == two
  assert config.batch_size == tiny.get_config().batch_size  # not changed


def run_plan(*flags) -> subprocess.CompletedProcess:
  command = [sys.executable, '-m', 'sharp_unet_jax.plan', '--config=configs/tiny.py']
  return subprocess.run(
    [*command, *flags], cwd=ROOT, capture_output=True, text=True, timeout=300
  )


# Between the peaks of 1 and 2 images per device (~0.26 and ~0.50 MB): the
# command compiles 2 (over) and 1 (fits); the budget below fits neither, so
# test_a_budget_that_fits_nothing_is_one_error_line compiles nothing.
LOCAL_LIMIT_GIB = 0.0003


@pytest.fixture(scope='module')
def local_plan(tmp_path_factory):
  """(the `plan --target=local` run, its cache folder), planned afresh."""
  cache_dir = str(tmp_path_factory.mktemp('plan_cache'))
  done = run_plan(
    '--target=local',
    f'--memory_limit_gib={LOCAL_LIMIT_GIB}',
    '--dtypes=float32',
    f'--cache_dir={cache_dir}',
    '--config.depth=1',
  )
  assert done.returncode == 0, done.stderr[-2000:]
  return done, cache_dir


def test_local_gives_a_batch_and_a_json_line_and_caches(local_plan):
  done, cache_dir = local_plan
  summary = json.loads(done.stdout.strip().splitlines()[-1])
  plan = summary['train']['float32']
  devices = summary['devices']
  assert plan['batch'] == plan['batch_per_device'] * devices > 0
  assert plan['peak_bytes'] <= summary['budget_bytes'] == int(LOCAL_LIMIT_GIB * 2**30)
  assert f'--config.batch_size={plan["batch"]} --config.dtype=float32' in done.stdout
  assert re.search(r'candidate 1 of at most \d+: .* elapsed\)', done.stdout)
  assert not any(c['cached'] for c in plan['candidates'])
  # The same plan again, here (this test's 4 CPU devices are the command's
  # too): every candidate comes from the cache the command wrote.
  config = tiny.get_config()
  config.depth = 1
  cache = report_cache.ReportCache(cache_dir)
  planner = planning.Planner(config, budgets.resolve('local'), cache)
  replan = planner.plan_train('float32', summary['budget_bytes'])
  assert replan.best.batch == plan['batch_per_device']
  assert all(c.details['cached'] for c in replan.candidates)


def test_a_budget_that_fits_nothing_is_one_error_line(local_plan):
  _, cache_dir = local_plan
  done = run_plan(
    '--target=local',
    '--memory_limit_gib=0.00001',
    '--dtypes=float32',
    '--config.depth=1',
    f'--cache_dir={cache_dir}',
  )
  assert done.returncode == 2
  errors = [line for line in done.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and 'No train batch fits' in errors[0], done.stderr[-2000:]
  assert 'Traceback' not in done.stderr
  # A second command reads the first one's cache: it compiles nothing again.
  first = r'candidate 1 of at most \d+: 2 per device, .*, over budget \(cached;'
  assert re.search(first, done.stdout), done.stdout[-2000:]
  assert 'compiling' not in done.stdout


def test_predict_auto_tile_batch_is_logged(workdir, tmp_path, caplog):  # noqa: F811
  # In this process: the command line passes --tile_batch to predict_files
  # as it is (predict_test runs the command itself).
  image = tmp_path / 'scan.png'
  Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(image)
  caplog.set_level('INFO', logger='absl')
  report = predict.predict_files(
    workdir, str(image), str(tmp_path / 'out'), tile_batch='auto', progress=False
  )
  assert report.written and not report.skipped
  chosen = re.search(r'--tile_batch=auto: chose tile_batch=(\d+)', caplog.text)
  assert chosen and int(chosen.group(1)) >= 1, caplog.text[-2000:]
  assert os.listdir(tmp_path / 'out') == ['scan.png']


def test_auto_tile_batch_falls_back_without_memory_analysis(monkeypatch):
  import jax  # noqa: PLC0415

  from sharp_unet_jax.compilation import meshes  # noqa: PLC0415
  from sharp_unet_jax.model import models  # noqa: PLC0415

  config = tiny.get_config()
  model = models.create_model(config, 'cpu')
  params = jax.eval_shape(lambda: models.init_params(model, config, jax.random.key(0)))
  monkeypatch.setattr(compile_reports, 'memory', lambda program: {'peak_bytes': None})
  chosen = tile_batch.auto_tile_batch(
    lambda p, x: model.apply({'params': p}, x),
    params,
    num_classes=1,
    tile_size=(32, 32),
    channels=3,
    tta='none',
    mesh=meshes.data_mesh(jax.devices()[:2]),
  )
  assert chosen == tile_batch.FALLBACK
