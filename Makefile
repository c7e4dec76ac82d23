# Two commands: `make demo` (the runtime classifying a stream with the bundled model) and `make test`.
# Each builds .venv from pyproject.toml when it is missing or older than pyproject.toml.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# 30 s of a stream paced at 30 fps like a camera (drop ?fps=30 to run as fast as the model can).
DEMO_FRAMES ?= 900

.PHONY: demo demo-banknotes test test-slow lint typecheck venv-device venv-all clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

# The device set only: no TensorFlow, as on a Raspberry Pi.
$(VENV)/.device-installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[device]'
	touch $@

# Everything that installs on Linux, plus the test and lint tools.
$(VENV)/.all-installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[all,dev]'
	touch $@ $(VENV)/.device-installed

venv-device: $(VENV)/.device-installed
venv-all: $(VENV)/.all-installed

demo: $(VENV)/.device-installed
	$(BIN)/edge-runtime run --model models/traffic-signs --source 'synthetic:traffic-signs?fps=30' \
		--max-frames $(DEMO_FRAMES) --smooth 5 --output pretty

demo-banknotes: $(VENV)/.device-installed
	$(BIN)/edge-runtime run --model models/banknotes --source 'synthetic:banknotes?fps=30' \
		--max-frames $(DEMO_FRAMES) --smooth 3 --output pretty --reject-label counterfeit

lint: $(VENV)/.all-installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(VENV)/.all-installed
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

test-slow: $(VENV)/.all-installed
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
