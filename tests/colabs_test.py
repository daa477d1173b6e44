"""The Colab notebooks run headless, end to end, with small-run parameters.

Parameters are injected the way papermill does it: a cell placed right after
the cell tagged 'parameters' overrides its values.
"""

import ast
import os
import re

import pytest
import two_processes

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLABS = os.path.join(ROOT, 'colabs')
NOTEBOOKS = ('sharp_unet_demo.ipynb', 'reuse_sharp_block.ipynb')


def read(name):
  return nbformat.read(os.path.join(COLABS, name), as_version=4)


def execute(name, parameters, workdir):
  """Runs notebook `name` with `parameters` injected; returns it with outputs."""
  notebook = read(name)
  tagged = [
    i
    for i, cell in enumerate(notebook.cells)
    if 'parameters' in cell.metadata.get('tags', [])
  ]
  assert len(tagged) == 1, f'{name} needs exactly one cell tagged "parameters"'
  source = '\n'.join(f'{key} = {value!r}' for key, value in parameters.items())
  injected = nbformat.v4.new_code_cell(source)
  injected.metadata['tags'] = ['injected-parameters']
  notebook.cells.insert(tagged[0] + 1, injected)
  client = nbclient.NotebookClient(
    notebook,
    timeout=240,
    kernel_name='python3',
    resources={'metadata': {'path': str(workdir)}},
  )
  client.execute()
  return notebook


def printed(notebook) -> str:
  return ''.join(
    output.get('text', '')
    for cell in notebook.cells
    if cell.cell_type == 'code'
    for output in cell.outputs
    if output.output_type == 'stream'
  )


@pytest.fixture
def kernel_env(monkeypatch):
  """The kernel imports this checkout, on one CPU device, like a Colab runtime
  (compiling as the session does: conftest.py)."""
  path = os.environ.get('PYTHONPATH')
  monkeypatch.setenv('PYTHONPATH', ROOT + (os.pathsep + path if path else ''))
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('XLA_FLAGS', two_processes.xla_flags(1))


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_committed_without_outputs(name):
  notebook = read(name)
  nbformat.validate(notebook)
  code = [cell for cell in notebook.cells if cell.cell_type == 'code']
  assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_demo_notebook_runs(tfds_dir, tmp_path, kernel_env):
  notebook = execute(
    'sharp_unet_demo.ipynb',
    {
      'dataset': 'synthetic_lesions/small',
      'data_dir': tfds_dir,
      'workdir': str(tmp_path / 'runs'),
      'image_size': 32,
      'num_filters': 4,
      'depth': 2,
      'batch_size': 8,
      'num_train_steps': 4,
      'eval_every_steps': 2,
    },
    tmp_path,
  )
  text = printed(notebook)
  assert 'DEMO COMPLETE steps=4' in text
  assert re.search(r'^U-Net +test dice=', text, re.MULTILINE)
  assert re.search(r'^Sharp U-Net +test dice=', text, re.MULTILINE)
  gain = float(text.split('high_frequency_gain=')[1].split()[0])
  assert gain > 1.0  # The Laplacian moves power to high frequencies.
  figures = [
    output
    for cell in notebook.cells
    if cell.cell_type == 'code'
    for output in cell.outputs
    if 'image/png' in output.get('data', {})
  ]
  assert len(figures) >= 5
  assert not (tmp_path / 'sharp_unet_jax_repo').exists()  # Install was a no-op.
  for run in ('sharp_unet', 'unet'):
    assert os.path.isfile(tmp_path / 'runs' / run / 'test_metrics.json')


def test_reuse_notebook_runs(tfds_dir, tmp_path, kernel_env):
  notebook = execute(
    'reuse_sharp_block.ipynb',
    {
      'dataset': 'synthetic_lesions/small',
      'data_dir': tfds_dir,
      'image_size': 32,
      'widths': (8, 16),
      'batch_size': 8,
      'num_train_steps': 8,
      'learning_rate': 3e-3,
    },
    tmp_path,
  )
  text = printed(notebook)
  assert 'REUSE COMPLETE' in text and 'steps=8' in text
  line = text.split('trainable parameters: ')[1].splitlines()[0]
  counts = ast.literal_eval(line)
  assert counts['plain skips'] == counts['sharp skips'] > 0
  assert 'SharpBlock variables: {}' in text
  assert not (tmp_path / 'sharp_unet_jax_repo').exists()  # Install was a no-op.
