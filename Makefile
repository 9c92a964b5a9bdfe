# Slipway: two commands on a fresh machine.
#   make demo   the main job on the embedded default (no cluster needed)
#   make test   lint, type checks and the whole test suite on a real control plane
# Everything a target needs is installed or built when missing, and reused when present.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Installed when pyproject.toml changes.
INSTALLED := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: help venv testbed testbed-images images datasets lint fmt crds test test-unit gpu-check demo bench cluster cluster-down clean

help:
	@echo "make demo          run the main job on this machine (installs what is missing)"
	@echo "make test          lint, type checks and every test (builds the test control plane when missing)"
	@echo "make cluster       start the test control plane in the background; make cluster-down stops it"
	@echo "make images        build the operator, trainer and server images (REGISTRY=... TAG=... pushes them)"
	@echo "make bench         side-by-side benchmarks (results: benchmarks/RESULTS.md)"

$(INSTALLED): pyproject.toml
	@scripts/setup-venv.sh "$(PYTHON)" "$(VENV)"
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(INSTALLED)

testbed:
	@scripts/install-node-packages.sh
	@tests/cluster/build.sh

datasets:
	@scripts/install-datasets.sh

# The three images from images/*/Dockerfile: with Docker where it runs, else with BuildKit, air-gapped (a Debian
# base, a wheelhouse) into docker archives; REGISTRY=registry.example.com/slipway TAG=0.1.0 pushes them.
images: venv
	@PY=$(PY) scripts/images.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

fmt: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The chart ships the same CRDs (charts/slipway/crds/, byte-identical; tests/integration/test_chart.py checks).
crds: venv
	$(PY) -m slipway_operator.api.crd crds
	rm -f charts/slipway/crds/*.yaml && cp crds/*.yaml charts/slipway/crds/

# The operator, server and trainer images the real node runs, built before the tests when what goes into them
# changed (BuildKit, no network; the trainer takes 5-10 min), so no test's timeout pays for a build. Seconds when
# they are up to date.
testbed-images: venv testbed
	@$(PY) tests/cluster/buildkit.py

test: venv testbed datasets lint testbed-images
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# On a machine with a CUDA GPU: the training tests again, training on it, then the GPU throughput comparison.
gpu-check: venv datasets
	SLIPWAY_TEST_GPUS=1 $(PY) -m pytest -p no:cacheprovider tests/unit/test_train.py $(PYTEST_ARGS)
	$(PY) benchmarks/train_vs_torch.py --device cuda --rows 60000 --epochs 4

demo: venv datasets
	$(VENV)/bin/slipway demo

bench: venv datasets
	@scripts/install-bench-tools.sh
	$(PY) benchmarks/prep_vs_polars.py --rows $${BENCH_ROWS:-1000000}
	$(PY) benchmarks/train_vs_torch.py
	$(PY) benchmarks/journey_vs_torch.py
	$(PY) benchmarks/tune_asha_vs_fifo.py
	$(PY) benchmarks/tune_asha_vs_fifo.py --data fashion-mnist
	$(PY) benchmarks/serve_vs_naive.py
	$(PY) benchmarks/serve_vs_kserve.py
	tests/cluster/build.sh && $(PY) benchmarks/operator_scale.py

cluster: venv testbed
	@$(PY) tests/cluster/testbed.py up

cluster-down:
	@$(PY) tests/cluster/testbed.py down

clean:
	rm -rf $(VENV) tests/cluster/bin .testbed .mypy_cache .ruff_cache .pytest_cache
