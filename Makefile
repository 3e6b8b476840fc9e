# ssd_eval — see README.md. Every target sets up .venv first if it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
MODEL  ?= sample
CONFIG ?= configs/$(MODEL).yaml
ARGS   ?=
PROTOCOL ?=
BASELINES ?= baselines
EVAL_ARGS = $(if $(PROTOCOL),--set protocol=$(PROTOCOL),) $(ARGS)

# Variants with a published number: those whose config names model.published_protocol.
PUBLISHED_VARIANTS = $(basename $(notdir $(shell grep -l '^ *published_protocol:' configs/*.yaml)))

.PHONY: venv eval test data models table gate baseline bench bench-harness report sample clean reproduce

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

eval: $(STAMP)
ifeq ($(MODEL),sample)
	$(PY) -m ssd_eval eval --config configs/sample.yaml $(EVAL_ARGS)
	$(PY) -m ssd_eval eval --config configs/sample-int8.yaml $(EVAL_ARGS)
	$(PY) -m ssd_eval eval --config configs/sample-qdq.yaml $(EVAL_ARGS)
	$(PY) -m ssd_eval table
else
	$(PY) -m ssd_eval eval --config $(CONFIG) --download $(EVAL_ARGS)
endif

# Every published number under the protocol its source used (downloads when absent), then the table.
reproduce: $(STAMP)
	@for variant in $(PUBLISHED_VARIANTS); do \
	  echo "== $$variant (protocol: published)"; \
	  $(PY) -m ssd_eval eval --config configs/$$variant.yaml --download --set protocol=published $(ARGS) || exit $$?; \
	done
	$(PY) -m ssd_eval table

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

models: $(STAMP)
	$(PY) -m ssd_eval fetch models $(if $(filter-out sample,$(MODEL)),--variant $(MODEL),)

data: $(STAMP)
	$(PY) -m ssd_eval fetch data

table: $(STAMP)
	$(PY) -m ssd_eval table

gate: $(STAMP)
	$(PY) -m ssd_eval gate --baselines $(BASELINES) $(ARGS)

baseline: $(STAMP)
	$(PY) -m ssd_eval baseline --update --baselines $(BASELINES) $(ARGS)

bench: $(STAMP)
	$(PY) -m ssd_eval bench --variant $(MODEL) $(ARGS)

bench-harness: $(STAMP)
	$(PY) -m ssd_eval bench-harness $(ARGS)

report: $(STAMP)
	$(PY) -m ssd_eval report

sample: $(STAMP)
	$(PY) -m ssd_eval.sample --out data/sample

clean:
	rm -rf $(VENV) .pytest_cache
