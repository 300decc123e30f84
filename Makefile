# The two set-up commands of the README. Each creates (or reuses) .venv and installs the project first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint

# Every package is installed at the version in $(CONSTRAINTS): the versions the test suite passed with (Python 3.11),
# the same pins the cluster image installs, so a fresh machine gets what was tested rather than whatever was
# released since. `make CONSTRAINTS=` installs the newest versions instead (regenerate the file after that: see
# cluster/README.md, "Pinned versions").
CONSTRAINTS ?= cluster/constraints.txt
PIN = $(if $(CONSTRAINTS),==$(shell sed -n 's/^$(1)==//p' $(CONSTRAINTS)))

# torch: on a machine without an NVIDIA GPU (no nvidia-smi) its CPU wheels, from PyTorch's CPU index (PyPI has only
# the CUDA build for Linux x86-64): .venv about 2.4 GB instead of 7. Where that index cannot be reached, torch comes
# from PyPI with the project. `make TORCH_CPU_INDEX=` skips this step.
# The CPU step is --isolated (that index only, none of the machine's pip settings): a local wheel folder may hold a
# CPU torch of another version, next to which the index's torchvision would not load (torchvision::nms missing).
# It pins only torch and torchvision (that index does not hold every pinned version of their dependencies); the
# project's install then brings every package to its pin.
# The last check stops the install when torch and torchvision in .venv are not a working pair.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if [ -n "$(TORCH_CPU_INDEX)" ] && ! command -v nvidia-smi >/dev/null 2>&1; then \
	  $(PY) -m pip install -q --isolated --timeout 10 --retries 1 --index-url $(TORCH_CPU_INDEX) \
	    'torch$(call PIN,torch)' 'torchvision$(call PIN,torchvision)' \
	  || echo "$(TORCH_CPU_INDEX) not reachable: torch comes from PyPI, with its CUDA wheels (.venv about 7 GB)"; \
	fi
	$(PY) -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev]'
	$(PY) -c 'import torch, torchvision; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)' \
	  || { echo "torch and torchvision in $(VENV) are not a matching pair: rm -rf $(VENV) and make again" >&2; exit 1; }
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m evaluation.loso --dataset mahnob --synthetic --output runs/demo/results.json

# The whole suite as two pytest sessions side by side (tests/run_parallel.py says why and how).
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) tests/run_parallel.py -q --durations=10

lint: $(STAMP)
	$(PY) -m ruff check .
