# The two set-up commands of the README. Each creates (or reuses) .venv and installs the project first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m evaluation.loso --dataset mahnob --synthetic --output runs/demo/results.json

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q --durations=15

lint: $(STAMP)
	$(PY) -m ruff check .
