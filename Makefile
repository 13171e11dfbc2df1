# `make demo` and `make test` each create their own venv (.venv) on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_TFDS := $(abspath ../shared/tensorflow_datasets)
ifneq ($(wildcard $(SHARED_TFDS)),)
export TFDS_DATA_DIR ?= $(SHARED_TFDS)
endif
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-all bench results lint clean test-jax test-torch \
	test-backends docs wheel-smoke

# The backend-agnostic core suite, run again under JAX and PyTorch.
CORE_TESTS := $(wildcard tests/test_targeting.py tests/test_targeting_noise.py \
	tests/test_batched_targeting.py \
	tests/test_schedules.py \
	tests/layers/test_targeted_dropout.py \
	tests/layers/test_triangular_dropout.py \
	tests/layers/test_model_targeted_dropout.py tests/callbacks/test_ramping.py \
	tests/layers/test_group_targeting.py tests/layers/test_group_statistics.py \
	tests/layers/test_model_ordered_dropout.py \
	tests/channels/test_graph.py \
	tests/test_wrapping.py tests/pruning/test_masks.py \
	tests/pruning/test_shrink.py tests/pruning/test_recalibrate.py \
	tests/test_truncation.py \
	tests/reliability/test_backends.py tests/reliability/test_properties.py \
	tests/reliability/test_mixed_precision.py \
	tests/reliability/test_resume.py tests/reliability/test_safe_mode.py)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,plots,litert,tfmot,tensorboard]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/keras-tdrop demo --out demo_out

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m ""

# Tests that call TensorFlow directly (tf.GradientTape, tf.function) or
# count traces (the torch trainer does not trace): deselected on the other
# backends until their files skip them there.
NOT_JAX := \
	--deselect tests/layers/test_triangular_dropout.py::test_unknown_batch_dimension_in_functional_model \
	--deselect tests/layers/test_triangular_dropout.py::test_gradients_only_reach_kept_units
NOT_TORCH := $(NOT_JAX) \
	--deselect tests/callbacks/test_ramping.py::test_no_retracing_when_rates_change

# JAX from PyPI (~600 MB); torch 2.13.0 is the CPU build on this machine's
# disk (any other torch spec downloads a multi-GB CUDA build).
$(VENV)/.jax: $(VENV)/.installed
	$(PY) -m pip install -q "jax>=0.4.36,<0.11"
	touch $@

$(VENV)/.torch: $(VENV)/.installed
	$(PY) -m pip install -q torch==2.13.0
	touch $@

test-jax: $(VENV)/.jax
	KERAS_BACKEND=jax $(PY) -m pytest -q -p no:cacheprovider $(NOT_JAX) \
		$(CORE_TESTS)

test-torch: $(VENV)/.torch
	KERAS_BACKEND=torch $(PY) -m pytest -q -p no:cacheprovider $(NOT_TORCH) \
		$(CORE_TESTS)

test-backends: test-jax test-torch

# Benchmarks of issue 8 (small sizes; `make bench BENCH_ARGS=--full` for
# the issue's sizes). Each prints RESULT lines; see BENCHMARKS.md.
BENCHMARKS := td_overhead triangular_overhead ramp_overhead sweep_cost \
	deployed_speed memory recalibration_cost
bench: $(VENV)/.installed
	for b in $(BENCHMARKS); do $(PY) benchmarks/$$b.py $(BENCH_ARGS) || exit 1; done

# The multi-seed tables and plots of docs/reproducing.md, rebuilt from the run files
# committed under docs/results/<scale>/ (config, results, sweep CSVs): each
# scale's compare/ folder (compare.txt, compare.png, CSVs) is rewritten,
# with the BatchNorm-recalibrated sweeps' *_recalibrated files where runs
# have them. paper_claims.py writes the paper's claims at the converged
# scale, with verdicts by the seeds' bands, to claims.txt.
results: $(VENV)/.installed
	for d in docs/results/*/; do \
		case $$d in *cifar10_mobile*/) continue;; esac; \
		$(VENV)/bin/keras-tdrop compare --results $$d --out $${d}compare \
			|| exit 1; \
		if ls $${d}*/sweep_unit_recalibrated.csv >/dev/null 2>&1; then \
			$(VENV)/bin/keras-tdrop compare --results $$d --recalibrated \
				--out $${d}compare || exit 1; \
		fi; \
	done
	$(VENV)/bin/python docs/results/paper_claims.py \
		docs/results/cifar10_resnet8_cos20 \
		> docs/results/cifar10_resnet8_cos20/claims.txt
	$(PY) -m keras_tdrop.experiments.mobile_compare docs/results/cifar10_mobile
	if ls docs/results/cifar10_mobile_search/*/results.json >/dev/null 2>&1; \
	then $(PY) -m keras_tdrop.experiments.mobile_compare \
		--metric val_accuracy docs/results/cifar10_mobile_search; fi
	$(PY) docs/results/mobile_claims.py docs/results/cifar10_mobile \
		> docs/results/cifar10_mobile/claims.txt

# The guides (docs/*.md) and the API reference generated from the
# docstrings, built into site/; any warning fails the build.
$(VENV)/.docs: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[docs]"
	touch $@

docs: $(VENV)/.docs
	$(VENV)/bin/mkdocs build --strict --site-dir site

# The wheel, installed with the litert extra alone in a fresh virtual
# environment: import, fit with targeted dropout, masks, a TFLite export.
wheel-smoke: $(VENV)/.installed
	$(PY) .ci/wheel_smoke.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check keras_tdrop tests examples benchmarks docs/results

clean:
	rm -rf $(VENV) demo_out .pytest_cache site
