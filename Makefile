# The README's two Quickstart commands: `make train` and `make test`.
# Both create a virtual environment and install requirements.txt on first use:
# .venv for the default python3, .venv-3.X for any other PYTHON.

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
WORKDIR ?= workdirs/default
CONFIG ?= configs/default.py

.PHONY: install train test test-all-pythons lint format

install: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .  # so `tfds build --imports` finds it
	touch $(STAMP)

# Trains Sharp U-Net on the embedded synthetic_lesions data set (no download).
train: $(STAMP)
	$(PY) main.py --config=$(CONFIG) --workdir=$(WORKDIR)

# Style check, then the whole test suite on 2 workers.
test: $(STAMP) lint
	$(PY) -m pytest -n 2 --durations=10 tests

# The suite on the default Python, then on each of PYTHONS.
test-all-pythons: test
	for p in $(PYTHONS); do $(MAKE) test PYTHON=$$p || exit 1; done

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .
