# The README's two Quickstart commands: `make train` and `make test`.
# Both create .venv and install requirements.txt on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
WORKDIR ?= workdirs/default
CONFIG ?= configs/default.py

.PHONY: install train test lint format

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

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .
