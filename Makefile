# Every target installs what it needs (once; later runs find it cached) and can be re-run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/audiojob-operator
export AUDIOJOB_CACHE := $(CACHE)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help venv system-deps binaries npm-deps node image test test-fast lint typecheck check demo cluster-up cluster-down bench clean

help:
	@echo "make demo         run the controller on a local control plane with sample jobs"
	@echo "make test         install everything needed and run the whole test suite"
	@echo "make image        build the image from the Dockerfile (BuildKit; cached by content)"
	@echo "make lint         ruff + mypy --strict"
	@echo "make cluster-up   start the local control plane (kubeconfig path is printed)"
	@echo "make cluster-down stop it and remove its state"
	@echo "make bench        run the benchmarks (prints ratios against baselines)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=25.1'
	$(PY) -m pip install -q -e . --group dev
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

# ffmpeg/ffprobe for the runner; openssl for the control plane's PKI; faketime for the test
# of a controller whose wall clock is a day ahead (tests/e2e/test_takeover.py); tmux for the
# test of `audiojob status --watch` on a real terminal (tests/controller/test_status.py).
system-deps:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null && command -v openssl >/dev/null \
	  && command -v faketime >/dev/null && command -v tmux >/dev/null || { \
	  echo "==> apt-get install ffmpeg openssl faketime tmux"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg openssl faketime tmux; }

binaries:
	bash devcluster/build-binaries.sh

# @libsql/client for the example app and the Hrana conformance test (needs Node 20+).
npm-deps:
	bash devcluster/npm-deps.sh

# The real node (devcluster/node/): containerd, runc and iptables from apt when missing, the
# kubelet, the CNI plugins and the pause program, cached beside the other binaries.
node:
	bash devcluster/build-binaries.sh --node

# The image the chart deploys, from the Dockerfile (devcluster/image.py): BuildKit from
# `binaries`, a Debian python base from mmdebstrap; unchanged inputs return at once.
image: venv binaries
	@command -v mmdebstrap >/dev/null && command -v runc >/dev/null || { \
	  echo "==> apt-get install mmdebstrap runc"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap runc; }
	$(PY) -m devcluster.image

test: venv system-deps binaries npm-deps node image
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Offline tiers only (no control plane, no real containers): unit, store, runner.
test-fast: venv system-deps npm-deps
	$(PY) -m pytest -q -m "not cluster and not realnode" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

check: lint test

demo: venv system-deps binaries node image
	$(PY) -m devcluster.demo

cluster-up: venv binaries
	$(PY) -m devcluster up

cluster-down: venv
	$(PY) -m devcluster down

# bench_realpods.py runs real pods: the real node and the image, like the real-node tests.
bench: venv system-deps binaries node image
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
