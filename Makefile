# ssd_eval — see README.md. Every target sets up .venv first if it is missing. `make help` lists them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The runtime venv (requirements.lock: what `make eval` needs) and, on top, the dev one (requirements-dev.lock:
# tests, lint, the extras the suite tests), each installed once.
DEV_STAMP := $(VENV)/.installed-dev
# An extra a target needs, installed when its module is missing, at the dev lock's versions: $(call extra,NAME,MODULE)
extra = @$(PY) -c "import $(2)" 2>/dev/null || $(PY) -m pip install -q -c requirements-dev.lock '$(1)'
MODEL  ?= sample
CONFIG ?= configs/$(MODEL).yaml
ARGS   ?=
PROTOCOL ?=
# Your own model or data as a variant of its own: make eval NAME=mine ARGS='--model m.onnx --annotations a.json --images dir'
NAME ?=
BASELINES ?= baselines
# Where eval's shards run: EXECUTOR=ray (Ray tasks; pip install -e '.[ray]') or local, JOBS=N shards (README).
EXECUTOR ?=
JOBS ?=
EVAL_ARGS = $(strip $(if $(PROTOCOL),--protocol $(PROTOCOL)) $(if $(EXECUTOR),--executor $(EXECUTOR)) \
  $(if $(JOBS),--jobs $(JOBS)) $(ARGS))
# CI on a budget (docs/STATISTICS.md): the image subset (subsets/$(SUBSET).json), its baselines, extra gate options.
SUBSET ?= $(if $(filter sample,$(MODEL)),sample-4,ci-500)
SIZE ?= 500
SUBSET_ALGORITHM ?= stratified
CI_BASELINES ?= baselines/ci
CI_RESULTS ?= results
GATE_ARGS ?=
# The tolerance `make ci-baseline` writes on every metric: ci95 (mAP, AP50, AP75; others fixed) or fixed.
TOLERANCE ?= ci95
# What `make ci-eval` passes every eval: one line per run, no progress (CI_EVAL_ARGS= for the full summary and progress).
CI_EVAL_ARGS ?= --summary line --no-progress

# Lists the configs already hold: the sample variants (configs/sample*.yaml) and the variants
# with a published number (those whose config names model.published_protocol).
SAMPLE_VARIANTS = $(sort $(basename $(notdir $(wildcard configs/sample*.yaml))))
PUBLISHED_VARIANTS = $(basename $(notdir $(shell grep -l '^ *published_protocol:' configs/*.yaml)))
# What `make ci-gate` evaluates and gates: the sample variants, or MODEL after its fp32 parent (model.parent).
MODEL_PARENT = $(shell sed -n 's/^ *parent: *\([A-Za-z0-9._-]*\).*/\1/p' $(CONFIG) 2>/dev/null)
CI_VARIANTS = $(if $(filter sample,$(MODEL)),$(SAMPLE_VARIANTS),$(MODEL_PARENT) $(MODEL))

.PHONY: help venv dev-venv eval test lint data models table gate baseline bench bench-harness report sample \
        reproduce portability clean mutants planted-bugs ci-gate ci-eval ci-baseline subset

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  make \1\t\2/' | expand -t 24

venv: $(STAMP) ## create .venv from requirements.lock, the runtime packages (every target does this first)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

dev-venv: $(DEV_STAMP) ## add requirements-dev.lock to .venv: tests, lint, the extras the suite tests

$(DEV_STAMP): $(STAMP) requirements-dev.lock
	$(PY) -m pip install -q -r requirements-dev.lock
	@touch $(DEV_STAMP)

eval: $(STAMP) ## evaluate the sample (default), MODEL=ssd-12-int8 [PROTOCOL=published] [EXECUTOR=ray JOBS=N], or NAME=mine ARGS='--model ...'
ifneq ($(NAME),)
	$(PY) -m ssd_eval eval --config $(CONFIG) --name $(NAME) $(EVAL_ARGS)
	$(PY) -m ssd_eval table
else ifeq ($(MODEL),sample)
ifeq ($(EXECUTOR),ray)
	$(PY) -m ssd_eval sweep $(foreach v,$(SAMPLE_VARIANTS),--config configs/$(v).yaml) \
	  $(if $(PROTOCOL),--protocol $(PROTOCOL),) --executor ray $(if $(JOBS),--jobs $(JOBS),) $(ARGS)
else
	@for variant in $(SAMPLE_VARIANTS); do \
	  $(PY) -m ssd_eval eval --config configs/$$variant.yaml $(EVAL_ARGS) || exit $$?; \
	done
	$(PY) -m ssd_eval table
endif
else
	$(call extra,opencv-python-headless,cv2)
	$(if $(findstring mlflow,$(ARGS)),$(call extra,mlflow-skinny,mlflow))
	$(if $(findstring tensorboard,$(ARGS)),$(call extra,tensorboardX,tensorboardX))
	$(PY) -m ssd_eval eval --config $(CONFIG) --download $(EVAL_ARGS)
endif

reproduce: $(STAMP) ## every published number under its source's protocol (downloads when absent), then the table
	$(call extra,opencv-python-headless,cv2)
	@for variant in $(PUBLISHED_VARIANTS); do \
	  echo "== $$variant (protocol: published)"; \
	  $(PY) -m ssd_eval eval --config configs/$$variant.yaml --download --set protocol=published $(ARGS) || exit $$?; \
	done
	$(PY) -m ssd_eval table

test: $(DEV_STAMP) ## the whole test suite
	$(PY) -m pytest $(ARGS)

lint: $(DEV_STAMP) ## ruff (rules in pyproject.toml), then the import layers (import-linter; docs/ARCHITECTURE.md)
	$(PY) -m ruff check ssd_eval tests tools
	$(VENV)/bin/lint-imports --no-cache

mutants: $(DEV_STAMP) ## mutation testing (mutmut) of the core modules, each with its tests; not in test/CI (MODULES=metrics)
	$(PY) tools/mutants.py $(MODULES) $(ARGS)

planted-bugs: $(DEV_STAMP) ## every bug in tools/planted_bugs.py (65: issues 15 and 21-26), each planted alone in a copy: a named test must catch it (5-6 minutes)
	$(PY) tools/planted_bugs.py $(ARGS)

models: $(STAMP) ## download the zoo models (or MODEL=ssd-12) into data/models/
	$(PY) -m ssd_eval fetch models $(if $(filter-out sample,$(MODEL)),--variant $(MODEL),)

data: $(STAMP) ## download COCO val2017 and its annotations into data/coco/
	$(PY) -m ssd_eval fetch data

table: $(STAMP) ## results/TABLE.md and results/table.csv from every results/*/metrics.json (ARGS=--all: every column)
	$(PY) -m ssd_eval table $(ARGS)

gate: $(STAMP) ## fail if mAP regressed against the baselines (BASELINES=baselines/zoo); last line: the verdict
	$(PY) -m ssd_eval gate --baselines $(BASELINES) $(ARGS)

baseline: $(STAMP) ## rewrite baselines from current results, printing the diff
	$(PY) -m ssd_eval baseline --update --baselines $(BASELINES) $(ARGS)

ci-eval: $(STAMP) ## CI on a budget, first half: evaluate MODEL (and its parent) on SUBSET (sample-4 / ci-500)
	@for variant in $(CI_VARIANTS); do \
	  $(PY) -m ssd_eval eval --config configs/$$variant.yaml --subset $(SUBSET) --out '$(CI_RESULTS)/{run}' \
	    $(CI_EVAL_ARGS) $(if $(filter sample,$(MODEL)),,--download) $(EVAL_ARGS) || exit $$?; \
	done

ci-gate: ci-eval ## CI on a budget: ci-eval (a line per run), then gate vs baselines/ci: its checks, the verdict last
	@$(PY) -m ssd_eval gate --baselines $(CI_BASELINES) --results $(CI_RESULTS) \
	  $(foreach v,$(CI_VARIANTS),--variant $(v)) $(GATE_ARGS)

ci-baseline: $(STAMP) ## write or refresh baselines/ci from the SUBSET results of MODEL (TOLERANCE=ci95|fixed, ARGS=--keep-detections)
	$(PY) -m ssd_eval baseline --update --baselines $(CI_BASELINES) --results $(CI_RESULTS) --subset $(SUBSET) \
	  --tolerance $(TOLERANCE) $(foreach v,$(CI_VARIANTS),--variant $(v)) $(ARGS)

subset: $(STAMP) ## write subsets/SUBSET.json: SIZE images of val2017, stratified by category or SUBSET_ALGORITHM=random (commit it)
	$(PY) -m ssd_eval.data.subsets --annotations data/coco/annotations/instances_val2017.json --size $(SIZE) --name $(SUBSET) \
	  --algorithm $(SUBSET_ALGORITHM)

bench: $(STAMP) ## model-alone speed, fp32 and quantized side by side (MODEL=ssd-12-int8)
	$(PY) -m ssd_eval bench --variant $(MODEL) $(ARGS)

bench-harness: $(DEV_STAMP) ## harness overhead, memory growth, scoring backends, int8 vs the physical limit (docs/PERFORMANCE.md)
	$(PY) -m ssd_eval.testing.bench_harness $(ARGS)

report: $(STAMP) ## PR curves and per-category AP changes as PNG (installs matplotlib, the report extra, if missing)
	$(call extra,matplotlib,matplotlib)
	$(PY) -m ssd_eval report

sample: $(DEV_STAMP) ## regenerate data/sample (byte-identical with the pinned packages)
	$(PY) -m ssd_eval.testing.sample --out data/sample

portability: $(DEV_STAMP) ## same sample stats under emulated AVX2/AVX/SSE4 CPUs; exact int8 there (needs qemu-user)
	tools/check_cpu_portability.sh
	OPENBLAS_CORETYPE=Haswell qemu-x86_64 -cpu Haswell $(PY) tools/check_exact_int8.py 2>&1 | grep -v '^qemu-x86_64: warning'

clean: ## remove .venv
	rm -rf $(VENV) .pytest_cache
