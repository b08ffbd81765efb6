# Every target installs what it needs (once; later runs find it cached) and can be re-run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/audiojob-operator
export AUDIOJOB_CACHE := $(CACHE)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help venv system-deps binaries npm-deps node image test test-fast lint typecheck check docs demo cluster-up cluster-down bench bench-quick release image-tools clean

help:
	@echo "make demo         run the controller on a local control plane with sample jobs"
	@echo "make test         install everything needed and run the whole test suite"
	@echo "make image        build the image from the Dockerfile (BuildKit; cached by content)"
	@echo "make lint         ruff + mypy --strict"
	@echo "make docs         regenerate docs/configuration.md and the chart's README"
	@echo "make cluster-up   start the local control plane (kubeconfig path is printed)"
	@echo "make cluster-down stop it and remove its state"
	@echo "make bench        run the benchmarks (prints ratios against baselines)"
	@echo "make bench-quick  a short subset of the controller bench (bench/README.md)"
	@echo "make release VERSION=x.y.z REGISTRY=host[:port][/path] [PLAIN_HTTP=1]"
	@echo "                  push the image and the chart to an OCI registry (docs/operations.md)"

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
image-tools:
	@command -v mmdebstrap >/dev/null && command -v runc >/dev/null || { \
	  echo "==> apt-get install mmdebstrap runc"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap runc; }

image: venv binaries image-tools
	$(PY) -m devcluster.image

# The image and the chart to an OCI registry (devcluster/release.py): VERSION must be the
# chart's version; credentials are those of `docker login` and `helm registry login`.
release: venv binaries image-tools
	@test -n "$(VERSION)" && test -n "$(REGISTRY)" || { \
	  echo "make release: give VERSION=x.y.z (the chart's version) and REGISTRY=host[:port][/path]" >&2; exit 2; }
	$(PY) -m devcluster.release --version "$(VERSION)" --registry "$(REGISTRY)" $(if $(PLAIN_HTTP),--plain-http)

test: venv system-deps binaries npm-deps node image
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Offline tiers only (no control plane, no real containers): unit, store, runner, the chart's
# renders and the docs (helm and helm-docs come from `binaries`).
test-fast: venv system-deps npm-deps binaries
	$(PY) -m pytest -q -m "not cluster and not realnode" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

check: lint test

# The generated references: the settings' docstrings -> docs/configuration.md, the chart's
# `# --` comments -> its README (tests/docs fails while either is stale).
docs: venv binaries
	$(PY) -m controller.settings_doc docs/configuration.md
	$(CACHE)/bin/helm-docs --chart-search-root charts --sort-values-order file --skip-version-footer

demo: venv system-deps binaries node image
	$(PY) -m devcluster.demo

cluster-up: venv binaries
	$(PY) -m devcluster up

cluster-down: venv
	$(PY) -m devcluster down

# BENCH picks the scripts, BENCH_CONTROLLER_ARGS is passed to bench_controller.py (its --help);
# `make bench-quick`: bench_controller.py's short subset only (bench/README.md).
# bench_realpods.py runs real pods: the real node and the image, like the real-node tests.
BENCH ?= bench/bench_*.py
BENCH_CONTROLLER_ARGS ?=
bench: venv system-deps binaries node image
	@for b in $(BENCH); do echo "== $$b"; args=""; \
	  if [ "$$b" = bench/bench_controller.py ]; then args="$(BENCH_CONTROLLER_ARGS)"; fi; \
	  $(PY) $$b $$args || exit 1; done

bench-quick: BENCH = bench/bench_controller.py
bench-quick: BENCH_CONTROLLER_ARGS = --quick
bench-quick: bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
