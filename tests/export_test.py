"""Export for serving: each artefact is reloaded in a fresh process and compared."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import two_processes

from configs import tiny
from sharp_unet_jax import export
from sharp_unet_jax import workdirs as workdir_files
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.training import checkpointing, restore, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_workdir(path, num_classes):
  """A workdir with config.json and a step-0 checkpoint, as training writes them."""
  config = tiny.get_config()
  config.num_classes = num_classes
  trainer = train.Trainer(config)
  state = trainer.initial_state()
  # Non-zero biases, so that every parameter shows in the outputs.
  rng = np.random.RandomState(num_classes)
  params = jax.tree_util.tree_map(
    lambda x: np.asarray(x) + rng.normal(0, 0.05, x.shape).astype(np.float32),
    state.params,
  )
  state = state.replace(params=jax.device_put(params, trainer.replicated))
  workdir = workdir_files.prepare(str(path))
  workdir_files.write_json_atomically(
    os.path.join(workdir, 'config.json'), config.to_dict()
  )
  manager = checkpointing.create_manager(workdir)
  checkpointing.save(manager, 0, state, force=True)
  manager.wait_until_finished()
  manager.close()
  return workdir


@pytest.fixture(scope='module')
def workdirs(tmp_path_factory):
  root = tmp_path_factory.mktemp('export')
  return {k: make_workdir(root / f'classes{k}', k) for k in (1, 3)}


def images(shape, seed=0):
  return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


def jax_probabilities(workdir, batch, input_dtype='uint8'):
  restored = restore.load(workdir)
  predict = export.make_predictor(restored, input_dtype)
  return np.asarray(jax.jit(predict)(restored.params, batch))


def run_fresh(code, tmp_path, **arrays):
  """Runs `code` in a new Python process; returns the arrays it saves as 'out'."""
  for name, value in arrays.items():
    np.save(tmp_path / f'{name}.npy', value)
  env = dict(
    os.environ,
    TF_CPP_MIN_LOG_LEVEL='2',
    JAX_PLATFORMS='cpu',
    XLA_FLAGS=two_processes.xla_flags(1),  # one device; the session's compiler flags
  )
  done = subprocess.run(
    [sys.executable, '-c', textwrap.dedent(code)],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=180,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return np.load(tmp_path / 'out.npz'), done.stdout


def test_stablehlo_reloads_in_a_fresh_process(workdirs, tmp_path):
  output = str(tmp_path / 'hlo')
  spec = export.export(workdirs[1], output, 'stablehlo', platforms=('cpu', 'cuda'))
  with open(os.path.join(output, export.SPEC_FILE)) as f:
    assert json.load(f) == json.loads(json.dumps(spec))
  assert spec['input']['shape'] == ['batch', '4*h', '4*w', 3]
  assert spec['output']['activation'] == 'sigmoid'
  square, wide = images((2, 32, 32, 3)), images((1, 16, 48, 3), seed=1)
  code = f"""
    import numpy as np
    from jax import export
    with open({os.path.join(output, export.STABLEHLO_FILE)!r}, 'rb') as f:
      exported = export.deserialize(f.read())
    print(exported.platforms, exported.in_avals)
    np.savez('out.npz', **{{
      name: np.asarray(exported.call(np.load(name + '.npy')))
      for name in ('square', 'wide')
    }})
  """
  out, stdout = run_fresh(code, tmp_path, square=square, wide=wide)
  assert "('cpu', 'cuda')" in stdout and 'uint8[b,4*h,4*w,3]' in stdout
  for name, batch in (('square', square), ('wide', wide)):
    want = jax_probabilities(workdirs[1], batch)
    assert out[name].shape == batch.shape[:3] + (1,)
    assert want.std() > 1e-4
    np.testing.assert_allclose(out[name], want, atol=1e-5)


def test_saved_model_serves_uint8_with_tensorflow_alone(workdirs, tmp_path):
  output = str(tmp_path / 'saved')
  command = [
    sys.executable,
    '-m',
    'sharp_unet_jax.export',
    f'--workdir={workdirs[3]}',
    f'--output={output}',
    '--format=saved_model',
  ]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'Exported saved_model for cpu' in done.stdout
  with open(os.path.join(output, export.SPEC_FILE)) as f:
    assert json.load(f)['output']['activation'] == 'softmax'
  batch = images((2, 32, 48, 3))
  code = f"""
    import sys
    sys.modules['jax'] = sys.modules['jaxlib'] = None  # Serving without JAX.
    import numpy as np
    import tensorflow as tf
    model = tf.saved_model.load({output!r})
    serve = model.signatures['serving_default']
    print(serve.structured_input_signature)
    out = serve(images=tf.constant(np.load('batch.npy')))['probabilities'].numpy()
    try:
      serve(images=tf.zeros((1, 30, 32, 3), tf.uint8))
    except tf.errors.InvalidArgumentError as e:
      print('REFUSED', 'multiples of 4' in str(e))
    loaded = [name for name in sys.modules if name.startswith('jax')]
    print('JAX LOADED', loaded != ['jax', 'jaxlib'])
    np.savez('out.npz', out=out)
  """
  out, stdout = run_fresh(code, tmp_path, batch=batch)
  assert "dtype=tf.uint8, name='images'" in stdout
  assert 'REFUSED True' in stdout and 'JAX LOADED False' in stdout
  want = jax_probabilities(workdirs[3], batch)
  assert out['out'].shape == (2, 32, 48, 3)
  np.testing.assert_allclose(out['out'].sum(-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(out['out'], want, atol=1e-5)


def test_grey_input_and_bad_shapes_and_arguments(workdirs, tmp_path):
  output = str(tmp_path / 'grey')
  export.export(workdirs[1], output, 'stablehlo', input_channels=1)
  with open(os.path.join(output, export.STABLEHLO_FILE), 'rb') as f:
    exported = jax.export.deserialize(f.read())
  grey = images((2, 32, 32, 1))
  got = np.asarray(exported.call(grey))
  want = jax_probabilities(workdirs[1], np.repeat(grey, 3, axis=-1))
  np.testing.assert_allclose(got, want, atol=1e-5)
  with pytest.raises(ValueError, match='Division had remainder'):
    exported.call(images((1, 30, 32, 1)))

  with pytest.raises(UserError, match='exists and is not empty'):
    export.export(workdirs[1], output, 'stablehlo')
  with pytest.raises(UserError, match='--format'):
    export.export(workdirs[1], str(tmp_path / 'x'), 'onnx')
  with pytest.raises(UserError, match='--platforms'):
    export.parse_platforms('cpu,gpu')
  with pytest.raises(UserError, match='config.json is missing'):
    export.export(str(tmp_path), str(tmp_path / 'y'), 'stablehlo')
  with pytest.raises(UserError, match='Cannot convert images with 4 channels to 2'):
    export.channels.to_channels(np.zeros((1, 4), np.float32), 2)


def grouped_convolutions(mlir: str) -> int:
  """Convolutions with feature_group_count > 1 in StableHLO text."""
  return len(re.findall(r'feature_group_count = ([2-9]|\d\d+)', mlir))


def test_export_for_tpu_on_a_cpu_host_keeps_the_grouped_convolution(workdirs, tmp_path):
  programs = {}
  for platforms in (('tpu',), ('cpu',), ('cpu', 'tpu')):
    output = str(tmp_path / '_'.join(platforms))
    export.export(workdirs[1], output, 'stablehlo', platforms=platforms)
    with open(os.path.join(output, export.STABLEHLO_FILE), 'rb') as f:
      exported = jax.export.deserialize(f.read())
    assert exported.platforms == platforms
    programs[platforms] = exported.mlir_module()
  # The Sharp blocks as the design's grouped convolution for TPU; the CPU
  # program has the fast form; a two-platform program carries both.
  assert grouped_convolutions(programs[('tpu',)]) > 0
  assert grouped_convolutions(programs[('cpu',)]) == 0
  assert grouped_convolutions(programs[('cpu', 'tpu')]) > 0
  assert 'reduce_window' in programs[('tpu',)]
  assert 'reduce_window' not in programs[('cpu',)]


def test_export_honours_the_workdirs_implementation(workdirs, tmp_path):
  found = {}
  for implementation in ('reference', None):
    workdir = tmp_path / str(implementation)
    shutil.copytree(workdirs[1], workdir)
    with open(workdir / 'config.json') as f:
      config = json.load(f)
    config.pop('implementation')  # A config.json older than the key: 'auto'.
    if implementation:
      config['implementation'] = implementation
    with open(workdir / 'config.json', 'w') as f:
      json.dump(config, f)
    output = str(tmp_path / f'out_{implementation}')
    export.export(str(workdir), output, 'stablehlo', platforms=('cpu',))
    with open(os.path.join(output, export.STABLEHLO_FILE), 'rb') as f:
      found[implementation] = jax.export.deserialize(f.read()).mlir_module()
  # 'reference' keeps the design's ops even in a CPU program; 'auto' does not.
  assert grouped_convolutions(found['reference']) > 0
  assert grouped_convolutions(found[None]) == 0
