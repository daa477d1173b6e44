#!/usr/bin/env bash
# Runs both notebooks' install cells and the notebooks themselves on a
# Colab-like runtime: a fresh Python 3.12 virtual environment with what Colab
# preinstalls (full tensorflow, current jax and flax, no clu, no ml-collections).
# The install cell clones REPO_URL (default: this checkout's committed HEAD).
# Fails if the install put tensorflow-cpu beside tensorflow or downgraded jax
# or flax, or if a notebook does not complete.
#
#   scripts/colab_check.sh                # PYTHON=python3.12 WORK=$(mktemp -d)
#   REPO_URL=https://github.com/you/sharp_unet_jax.git scripts/colab_check.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3.12}
WORK=${WORK:-$(mktemp -d /tmp/colab_check.XXXXXX)}
export SHARP_UNET_REPO_URL=${REPO_URL:-file://$ROOT}
# What Colab preinstalls (of what the notebooks use), plus the notebook driver.
COLAB=(tensorflow jax flax optax orbax-checkpoint tensorflow-datasets tensorboard
  matplotlib pillow scipy scikit-image tqdm ipykernel nbclient nbformat pytest)

echo "Colab-like runtime in $WORK (repo: $SHARP_UNET_REPO_URL)"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
"$WORK/venv/bin/python" -m pip install -q "${COLAB[@]}"
"$WORK/venv/bin/python" -m pip freeze > "$WORK/before.txt"

cd "$WORK"  # The kernel must not find this checkout on its path.
JAX_PLATFORMS=cpu "$WORK/venv/bin/python" - "$ROOT" "$WORK" <<'PY'
import os
import sys

root, work = sys.argv[1:]
sys.path.insert(0, os.path.join(root, 'tests'))
from colabs_test import execute, printed  # noqa: E402

tiny = {'dataset': 'synthetic_lesions/small', 'data_dir': os.path.join(work, 'tfds'),
        'image_size': 32, 'batch_size': 8, 'num_train_steps': 4}
runs = {
  'sharp_unet_demo.ipynb': dict(tiny, workdir=os.path.join(work, 'runs'), num_filters=4,
                                depth=2, eval_every_steps=2),
  'reuse_sharp_block.ipynb': dict(tiny, widths=(8, 16)),
}
for name, parameters in runs.items():
  folder = os.path.join(work, name.split('.')[0])
  os.makedirs(folder)
  text = printed(execute(name, parameters, folder))
  installed = [line for line in text.splitlines() if line.startswith('pip installed')]
  print(name, 'ran;', installed[0] if installed else 'NO INSTALL LINE')
  assert installed and 'COMPLETE' in text, text[-3000:]
PY

"$WORK/venv/bin/python" -m pip freeze > "$WORK/after.txt"
"$WORK/venv/bin/python" - "$WORK/before.txt" "$WORK/after.txt" <<'PY'
import sys

from packaging.version import Version

before, after = ({n.lower(): v for n, _, v in (line.strip().partition('==')
                  for line in open(path)) if v} for path in sys.argv[1:])
print('changed by the install cells:',
      {n: f'{before.get(n, "-")} -> {v}' for n, v in after.items() if before.get(n) != v})
assert 'tensorflow-cpu' not in after, 'tensorflow-cpu was installed beside tensorflow'
for name in ('jax', 'jaxlib', 'flax', 'tensorflow'):
  assert Version(after[name]) >= Version(before[name]), f'{name} was downgraded'
print('COLAB CHECK PASSED')
PY
