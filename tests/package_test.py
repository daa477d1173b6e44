"""Tests of the package metadata: declared dependencies, the lock, the import."""

import ast
import importlib.metadata
import pathlib
import re
import subprocess
import sys
import tomllib

from packaging import markers

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The lock installs the CPU build of TensorFlow; pyproject names the package
# that an installed full TensorFlow (Colab) satisfies.
LOCK_ALIASES = {'tensorflow-cpu': 'tensorflow'}
# The one module outside model/ that the model imports (shard_map over the
# batch), which imports nothing of the package itself.
MODEL_ALSO = ('compilation.meshes',)
# Modules the model classes need: the base install must cover them.
MODEL_MODULES = (
  'models',
  'sharp_block',
  'fast_layers',
  'network',
  'packed',
  'nnx_unet',
)


def normalise(name):
  return re.sub(r'[-_.]+', '-', name).lower()


def requirement(line):
  """'jax>=0.10.2; python_version < "3.12"' -> ('jax', '0.10.2')."""
  match = re.match(
    r'\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(?:[~>=]=\s*([\w.]+))?', line
  )
  return normalise(match.group(1)), match.group(2)


def project():
  with open(ROOT / 'pyproject.toml', 'rb') as f:
    return tomllib.load(f)['project']


def declared(extras=None):
  """{name: lower bound} of the base dependencies and the given extras."""
  meta = project()
  lines = list(meta['dependencies'])
  groups = meta['optional-dependencies']
  for extra in groups if extras is None else extras:
    lines += [x for x in groups[extra] if not x.startswith('sharp_unet_jax')]
  return dict(requirement(line) for line in lines)


def lock():
  """{name: version} of requirements.txt's lines for this Python."""
  pins = {}
  for line in (ROOT / 'requirements.txt').read_text().splitlines():
    line, _, marker = line.split('#')[0].partition(';')
    if line.strip() and (not marker or markers.Marker(marker).evaluate()):
      name, version = requirement(line)
      pins[LOCK_ALIASES.get(name, name)] = version
  return pins


def third_party_imports(modules):
  """Top-level names imported by the given files that are not stdlib or ours."""
  names = set()
  for path in modules:
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        names.update(alias.name.split('.')[0] for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names.add(node.module.split('.')[0])
  # `configs` is the checkout's folder of configs (benchmarks/benchmark.py reads it).
  return names - set(sys.stdlib_module_names) - {'sharp_unet_jax', 'configs'}


def distributions(module_names):
  """{import name: normalised distribution names that provide it}."""
  provided = importlib.metadata.packages_distributions()
  return {name: {normalise(d) for d in provided.get(name, [])} for name in module_names}


def test_every_import_is_declared():
  every = declared()
  package = sorted((ROOT / 'sharp_unet_jax').rglob('*.py'))
  for name, dists in distributions(third_party_imports(package)).items():
    dists = {LOCK_ALIASES.get(d, d) for d in dists}
    assert dists & set(every), f'{name} (from {dists}) is not declared in pyproject'


def test_the_model_needs_only_the_base_install():
  base = declared(extras=())
  model = [ROOT / 'sharp_unet_jax' / 'model' / f'{m}.py' for m in MODEL_MODULES]
  model += [ROOT / 'sharp_unet_jax' / f'{m.replace(".", "/")}.py' for m in MODEL_ALSO]
  for name, dists in distributions(third_party_imports(model)).items():
    assert dists & set(base), f'{name} is imported by the model but not a base dep'


def test_lower_bounds_are_the_locked_versions():
  bounds = declared(extras=('data', 'keras', 'dev'))
  pins = lock()
  assert set(pins) == set(bounds)
  for name, version in pins.items():
    if name == 'jax' and sys.version_info >= (3, 12):
      continue  # Python 3.12+ locks a newer JAX than the lower bound.
    assert bounds[name] == version, name


def test_licence_is_an_spdx_string():
  assert project()['license'] == 'MIT'


def test_import_is_cheap_and_exports_the_model():
  code = (
    'import sys, sharp_unet_jax as s;'
    "print(sorted(m for m in ('flax', 'tensorflow') if m in sys.modules));"
    'from sharp_unet_jax import SharpBlock, UNet;'
    'from sharp_unet_jax.model import models, sharp_block;'
    'print(UNet is models.UNet, SharpBlock is sharp_block.SharpBlock);'
    "print('tensorflow' in sys.modules, hasattr(s, 'Nope'))"
  )
  done = subprocess.run(
    [sys.executable, '-c', code], capture_output=True, text=True, timeout=120
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.split('\n')[:3] == ['[]', 'True True', 'False False']


# The top-level modules that are library, not programs (docs/architecture.md).
LIBRARY_TOP_LEVEL = {'cli', 'errors', 'workdirs', 'nnx', 'quick_exit'}
# Folders of programs and their parts: the measuring programs (with their
# `timing`) and the experiment (its `runs` and `cv` import `evaluate`).
PROGRAM_FOLDERS = {'benchmarks', 'experiment'}


def package_imports() -> dict[str, set[str]]:
  """Each module of the package -> the modules of the package it imports."""
  package = ROOT / 'sharp_unet_jax'
  modules = {}
  for path in package.rglob('*.py'):
    parts = path.relative_to(ROOT).with_suffix('').parts
    modules['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
  graph = {}
  for name, path in modules.items():
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and (node.module or '').startswith(
        'sharp_unet_jax'
      ):
        for alias in node.names:
          child = f'{node.module}.{alias.name}'
          found.add(child if child in modules else node.module)
      elif isinstance(node, ast.Import):
        found.update(a.name for a in node.names if a.name in modules)
    graph[name] = found - {name}
  return graph


def test_library_never_imports_a_program_and_nothing_imports_in_a_circle():
  graph = package_imports()

  def is_program(name):
    parts = name.split('.')
    if len(parts) > 2:
      return parts[1] in PROGRAM_FOLDERS
    return len(parts) == 2 and parts[1] not in LIBRARY_TOP_LEVEL

  assert 'sharp_unet_jax.evaluate' in graph and is_program('sharp_unet_jax.evaluate')
  assert is_program('sharp_unet_jax.benchmarks.timing')
  assert not is_program('sharp_unet_jax.training.replicas')
  wrong = sorted(
    (name, imported)
    for name, imports in graph.items()
    if not is_program(name)
    for imported in imports
    if is_program(imported)
  )
  assert wrong == []
  # Depth-first search for a module reached again while it is being visited.
  visiting, done = [], set()

  def visit(name):
    assert name not in visiting, f'import cycle: {visiting[visiting.index(name) :]}'
    if name in done:
      return
    visiting.append(name)
    for imported in sorted(graph[name]):
      visit(imported)
    visiting.pop()
    done.add(name)

  for name in sorted(graph):
    visit(name)


def test_the_model_and_its_nnx_form_import_only_the_model():
  graph = package_imports()
  model = {name for name in graph if name.startswith('sharp_unet_jax.model')}
  assert 'sharp_unet_jax.model.nnx_unet' in model
  allowed = {f'sharp_unet_jax.{m}' for m in MODEL_ALSO}
  for name in sorted(model | {'sharp_unet_jax.nnx'}):
    outside = {m for m in graph[name] if not m.startswith('sharp_unet_jax.model')}
    assert outside <= allowed, f'{name} imports {sorted(outside - allowed)}'
  for name in sorted(allowed):
    assert graph[name] == set(), f'{name} imports {sorted(graph[name])}'


# The library folders each library folder may import (docs/architecture.md).
MAY_IMPORT = {
  'compilation': {'errors'},
  'interop': {'errors'},
  'model': {'compilation'},  # its meshes only (the test above)
  'data': {'errors', 'compilation'},
  'evaluation': {'errors', 'compilation', 'data', 'workdirs'},
  'training': {'errors', 'compilation', 'data', 'evaluation', 'model', 'workdirs'},
}


def test_library_folders_import_one_way():
  graph = package_imports()
  for name, imports in sorted(graph.items()):
    parts = name.split('.')
    if len(parts) < 3 or parts[1] not in MAY_IMPORT:
      continue
    folder = parts[1]
    reached = {m.split('.')[1] for m in imports if '.' in m} - {folder}
    assert reached <= MAY_IMPORT[folder], f'{name} imports {sorted(reached)}'
