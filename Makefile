# The README's two Quickstart commands: `make train` and `make test`.
# Both create a virtual environment and install requirements.txt on first use:
# .venv for the default python3, .venv-3.X for any other PYTHON. `make test`
# also creates $(VENV)-aot: that environment plus the compile-only TPU and GPU
# wheels of requirements-aot.txt, kept apart so that `make train` never loads
# them.

PYTHON ?= python3
ifeq ($(PYTHON),python3)
VENV ?= .venv
else
VENV ?= .venv-$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
endif
# Other Pythons that `make test-all-pythons` tests on, each in its own venv.
PYTHONS ?= python3.13
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
AOT_VENV ?= $(VENV)-aot
AOT_PY := $(AOT_VENV)/bin/python
AOT_STAMP := $(AOT_VENV)/.requirements-installed
WORKDIR ?= workdirs/default
CONFIG ?= configs/default.py

.PHONY: install install-aot train test test-all-pythons lint format

install: $(STAMP)

install-aot: $(AOT_STAMP)

# uv installs the same pinned set as pip would, faster from an empty cache.
# Python writes each module's bytecode (.pyc) the first time a process imports
# it, and every later process loads it. A machine that sets
# PYTHONDONTWRITEBYTECODE (this project's do) would instead compile
# TensorFlow, JAX and the rest from source in every process: `import
# tensorflow, jax, orbax.checkpoint, flax` took 28-30 user-s instead of 10-11,
# and a clean-clone `make test` 21 min 42 s instead of 14 min 41 s. So make's
# commands run without it. Writing only what is imported, when it is first
# imported, is cheaper than uv's --compile-bytecode, which compiles every
# installed module at install (TensorFlow's thousands included).
unexport PYTHONDONTWRITEBYTECODE
UV := $(VENV)/bin/uv
UV_INSTALL := $(UV) pip install --quiet

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet 'uv~=0.13.9'
	$(UV_INSTALL) --python $(PY) -r requirements.txt
	$(UV_INSTALL) --python $(PY) --no-deps -e .  # so `tfds build --imports` finds it
	touch $(STAMP)

# $(AOT_VENV) sees $(VENV)'s packages through a .pth file, and adds its own.
$(AOT_STAMP): $(STAMP) requirements-aot.txt
	$(PYTHON) -m venv $(AOT_VENV)
	echo "import site; site.addsitedir('$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')')" \
	  > "$$($(AOT_PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/training_venv.pth"
	$(UV_INSTALL) --python $(AOT_PY) -r requirements-aot.txt
	touch $(AOT_STAMP)

# Trains Sharp U-Net on the embedded synthetic_lesions data set (no download).
train: $(STAMP)
	$(PY) main.py --config=$(CONFIG) --workdir=$(WORKDIR)

# Style check, then the whole test suite on 2 workers (in $(AOT_VENV), for the
# tests that compile for TPU and GPU). A third worker on a 2-core machine made
# `make test` slower (20.5 against 18.5 min from a clean clone of the same
# code, before the bytecode above was written; XLA's thread pools contend).
test: $(STAMP) $(AOT_STAMP) lint
	PATH="$(abspath $(VENV))/bin:$$PATH" $(AOT_PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=10 tests

# The suite on the default Python, then on each of PYTHONS.
test-all-pythons: test
	for p in $(PYTHONS); do $(MAKE) test PYTHON=$$p || exit 1; done

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .
