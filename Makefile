# `make demo` and `make test` each create their own venv (.venv) on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_TFDS := $(abspath ../shared/tensorflow_datasets)
ifneq ($(wildcard $(SHARED_TFDS)),)
export TFDS_DATA_DIR ?= $(SHARED_TFDS)
endif
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-all lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,plots,litert,tfmot]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/keras-tdrop demo --out demo_out

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m ""

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check keras_tdrop tests examples

clean:
	rm -rf $(VENV) demo_out .pytest_cache
