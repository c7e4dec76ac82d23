# Two commands: `make demo` (the runtime classifying a stream with the bundled model) and `make test`.
# Each builds .venv from pyproject.toml when it is missing or older than pyproject.toml.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# 30 s of a stream paced at 30 fps like a camera (drop ?fps=30 to run as fast as the model can).
DEMO_FRAMES ?= 900

BENCH_VENV ?= .venv-bench

.PHONY: demo demo-banknotes test test-slow lint typecheck venv-device venv-all bench-venv compare clean

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

# MediaPipe for benchmarks/compare.py, in a venv of its own: its opencv-contrib-python is a second
# cv2 that would replace the runtime's opencv-python-headless. The project is not installed there.
$(BENCH_VENV)/.installed: benchmarks/requirements-mediapipe.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip --disable-pip-version-check -q install -r $<
	touch $@

bench-venv: $(BENCH_VENV)/.installed

# The side-by-side comparison of docs/benchmarks.md (MediaPipe's column needs `make bench-venv`).
compare: $(VENV)/.all-installed
	$(BIN)/python benchmarks/compare.py --models all

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
	rm -rf $(VENV) $(BENCH_VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
