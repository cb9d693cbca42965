# One-command set-up and every workflow of the project. `make help` lists the targets.
# Every target depends on `setup`, which builds .venv once and again only when pyproject.toml changes.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp

# What to run on: DATA=synthetic (default when data/WFLW is absent) or DATA=wflw.
DATA ?= $(if $(wildcard data/WFLW/WFLW_annotations),wflw,synthetic)
# Number of training processes: on WFLW the GPUs found (else 1); the synthetic CPU default is one process.
GPUS ?= $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
NPROC := $(if $(and $(filter wflw,$(DATA)),$(filter-out 0,$(GPUS))),$(GPUS),1)
ifeq ($(DATA),wflw)
DATA_ROOT ?= data/WFLW
PRESET ?= $(if $(filter 1,$(NPROC)),wflw-1gpu,wflw-mmpose)
else
DATA_ROOT ?= data/synthetic
PRESET ?= cpu-default
endif
RUN ?= runs/$(PRESET)
# Preset overrides for the training command, e.g. TRAIN_ARGS="val_fraction=0" (no hold-out: mmpose's 900 steps).
TRAIN_ARGS ?=
SYNTH_TRAIN ?= 1500
SYNTH_TEST ?= 500
SYNTH_SEED ?= 0
PUBLISHED_CKPT := data/hrnetv2_w18_wflw_256x256-2bf032a6_20210125.pth
# The published recipe starts the backbone from ImageNet weights (WFLW runs; `PRETRAINED=` trains from scratch).
IMAGENET_WEIGHTS := data/hrnetv2_w18-00eb2006.pth
PRETRAINED ?= $(if $(filter wflw,$(DATA)),$(IMAGENET_WEIGHTS))

.PHONY: help setup test lint data synth train evaluate book reproduce lab bench clean

help:
	@echo "make setup      create .venv and install hrnet_lib with its extras, onnx included (idempotent)"
	@echo "make test       lint, unit tests, notebook smoke runs and the book build"
	@echo "make reproduce  data -> train -> evaluate -> book (synthetic on CPU, WFLW with DATA=wflw GPUS=N)"
	@echo "make data       download WFLW into data/WFLW and the ImageNet weights (or see data/README.md)"
	@echo "make synth      write the synthetic WFLW-format dataset into data/synthetic"
	@echo "make book       execute the notebooks with papermill and build the offline book (PRESET=smoke is quick)"
	@echo "make lab        JupyterLab on nbs/ (the .py notebooks open as notebooks through jupytext)"
	@echo "make bench      measure data, model and training throughput and write figures to bench/"
	@echo "make lint       ruff"
	@echo "make clean      remove generated files (keeps .venv and data/)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,book,onnx]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check hrnet_lib tests nbs
	$(VENV)/bin/ruff format --check hrnet_lib tests nbs

test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider

data: setup
	$(PY) -m hrnet_lib data download --root data/WFLW
	$(PY) -m hrnet_lib data check --root data/WFLW
	$(PY) -m hrnet_lib data weights --out $(IMAGENET_WEIGHTS)

$(IMAGENET_WEIGHTS): | setup
	$(PY) -m hrnet_lib data weights --out $@

synth: data/synthetic/.done

data/synthetic/.done: | setup
	$(PY) -m hrnet_lib synth --root data/synthetic --force --train $(SYNTH_TRAIN) --test $(SYNTH_TEST) --seed $(SYNTH_SEED)
	$(PY) -m hrnet_lib data check --root data/synthetic
	touch $@

ifeq ($(DATA),wflw)
DATA_DONE := data/WFLW/.checked
data/WFLW/.checked: | setup
	$(PY) -m hrnet_lib data check --root data/WFLW
	touch $@
else
DATA_DONE := data/synthetic/.done
endif

# summary.json is written only when a run completes, so an interrupted run is resumed, not skipped.
train: $(RUN)/summary.json

$(RUN)/summary.json: $(DATA_DONE) | setup $(PRETRAINED)
	$(if $(filter 1,$(NPROC)),$(PY) -m hrnet_lib,$(VENV)/bin/torchrun --standalone --nproc_per_node $(NPROC) -m hrnet_lib) \
	  train --preset $(PRESET) --data-root $(DATA_ROOT) --out $(RUN) --resume $(if $(PRETRAINED),--pretrained $(PRETRAINED)) $(TRAIN_ARGS)

evaluate: $(RUN)/results.json

$(RUN)/results.json: $(RUN)/summary.json
	$(PY) -m hrnet_lib evaluate --checkpoint $(RUN)/best.pt --data-root $(DATA_ROOT) --out $@
	$(if $(and $(filter wflw,$(DATA)),$(wildcard $(PUBLISHED_CKPT))), \
	  $(PY) -m hrnet_lib evaluate --checkpoint $(PUBLISHED_CKPT) --data-root $(DATA_ROOT) --out $(RUN)/published.json \
	    $(if $(wildcard data/WFLW/mmpose_json),--annotations data/WFLW/mmpose_json))

# PRESET=smoke makes its own tiny synthetic data and run in runs/smoke (kept, so a second build reuses them).
book: setup
	$(PY) -m hrnet_lib.book --preset $(or $(filter smoke,$(PRESET)),$(PRESET)) --run $(RUN) --data-root $(DATA_ROOT) \
	  --data-kind $(DATA) --gpus $(NPROC) $(if $(filter smoke,$(PRESET)),--work runs/smoke)

reproduce: evaluate
	$(PY) -m hrnet_lib.book --preset $(PRESET) --run $(RUN) --data-root $(DATA_ROOT) --data-kind $(DATA) --gpus $(NPROC)
	@echo "book: book/_build/html/index.html"

# JupyterLab reads the project's settings from jupyter/ too: jupyter/labconfig/default_setting_overrides.json
# makes the Jupytext notebook the default viewer of .py files, so a double click opens nbs/*.py as notebooks.
# LAB_ARGS adds options, e.g. LAB_ARGS="--no-browser --port 8899".
LAB_ARGS ?=
lab: setup
	JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter$(if $(JUPYTER_CONFIG_PATH),:$(JUPYTER_CONFIG_PATH))" \
	  $(VENV)/bin/jupyter lab --notebook-dir nbs $(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

bench: setup
	$(PY) -m hrnet_lib bench --out bench

clean:
	rm -rf book/_build book/generated runs/smoke bench .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
