# batch-requests: push a dataset through the OpenAI Batch API, one file in build/ per stage.
#
#   requests.jsonl -> chunk_NNN.jsonl -> batch_NNN.id -> results_NNN.jsonl -> merged.json
#
# Rerunning the same make command resumes where it stopped; nothing paid for is sent twice.
# `make help` lists the targets and variables.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules
.DELETE_ON_ERROR:
.SUFFIXES:
# Never delete an intermediate: batch ids and results cost money. (Not .PRECIOUS, which would
# switch .DELETE_ON_ERROR off for them.)
.SECONDARY:
.DEFAULT_GOAL := help

# ----------------------------------------------------------------------------- variables
## INPUT         dataset: a JSON list of objects, or JSONL (default: the shipped example)
INPUT ?= data/example.json
## CONFIG        YAML config: model, prompts per step
CONFIG ?= configs/example.yaml
## STEP          the config step to run
STEP ?= caption
## STEPS         steps for `make pipeline`, in order (default: the config's pipeline: list)
STEPS ?=
## DATA_KEY      the record field (or jq expression) that identifies a record: the custom_id
DATA_KEY ?= image_path
## RESPONSE_KEY  where the response goes in each record (default: the step's response_key)
RESPONSE_KEY ?=
## OUTPUT        also write the merged dataset to this path
OUTPUT ?=
## MAX_REQUESTS  requests per batch (at most 50000)
MAX_REQUESTS ?= 1000
## MAX_BYTES     bytes per batch input file (the API allows 200 MB)
MAX_BYTES ?= 180000000
## RETRIES       follow-up batches for retryable failures (429, 5xx, expired)
RETRIES ?= 3
## TOKEN_BUDGET  estimated input tokens allowed in flight per model (default: config token_budget)
TOKEN_BUDGET ?=
## STRICT        1: exit non-zero when any request finally failed
STRICT ?= 0
## LIMIT, FILTER `make status`: how many batches, and a jq filter over each batch object
LIMIT ?= 10
FILTER ?= .
## BATCH         `make check`: the batch id
BATCH ?=
## N             `make bench`: records in the synthetic dataset
N ?= 100000
## PORT          `make emulator`: the port to serve on
PORT ?= 8000
BUILD ?= build
NAME ?= $(basename $(notdir $(INPUT)))
## B             the step's build directory
B ?= $(BUILD)/$(NAME)/$(STEP)

VENV := .venv
PY := $(VENV)/bin/python
VENV_OK := $(VENV)/.installed
MERGED := $(B)/merged.$(if $(filter %.jsonl,$(INPUT)),jsonl,json)
# Quote a value for the shell (DATA_KEY may be a jq expression with spaces and quotes).
q = '$(subst ','\'',$(1))'
# Phony, or the bare .SECONDARY: would let make skip it, and the stamps would never update.
.PHONY: FORCE
FORCE:

# ----------------------------------------------------------------------------- environment
# Built once from pyproject.toml; rebuilt when it changes.
$(VENV_OK): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	  print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))' \
	  | xargs -d '\n' $(VENV)/bin/pip install --quiet
	touch $@

# ----------------------------------------------------------------------------- the pipeline
# Stamps: the variables that shape each file, rewritten only when they change.
$(B)/requests.params: FORCE | $(VENV_OK)
	@$(PY) scripts/write_if_changed.py $@ $(call q,STEP=$(STEP)) $(call q,DATA_KEY=$(DATA_KEY))
$(B)/split.params: FORCE | $(VENV_OK)
	@$(PY) scripts/write_if_changed.py $@ MAX_REQUESTS=$(MAX_REQUESTS) MAX_BYTES=$(MAX_BYTES)
$(B)/merge.params: FORCE | $(VENV_OK)
	@$(PY) scripts/write_if_changed.py $@ $(call q,RESPONSE_KEY=$(RESPONSE_KEY))

$(B)/requests.jsonl: $(INPUT) $(CONFIG) $(B)/requests.params scripts/make_requests.py scripts/config.py scripts/records.py | $(VENV_OK)
	$(PY) scripts/make_requests.py --input $(INPUT) --config $(CONFIG) --step $(STEP) \
	  --data-key $(call q,$(DATA_KEY)) -o $@ --skipped $(B)/skipped.jsonl

# The chunk manifest: Make includes it and restarts, so it learns the chunks after the split.
$(B)/chunks.mk: $(B)/requests.jsonl $(B)/split.params scripts/split_requests.py | $(VENV_OK)
	$(PY) scripts/split_requests.py $< --answers $(B)/answers \
	  --max-requests $(MAX_REQUESTS) --max-bytes $(MAX_BYTES) -o $@

# Only the goals that need the chunk list build it (`make status` must not split anything).
# A plain include: if the split fails, make stops there with the split's error.
CHUNK_IDS :=
ifneq ($(filter caption $(B)/%,$(MAKECMDGOALS)),)
ifeq ($(wildcard $(INPUT)),)
$(error INPUT=$(INPUT) does not exist; set INPUT=path/to/data.json (a JSON list, or .jsonl))
endif
ifeq ($(wildcard $(CONFIG)),)
$(error CONFIG=$(CONFIG) does not exist; set CONFIG=path/to/config.yaml)
endif
include $(B)/chunks.mk
endif
RESULTS := $(CHUNK_IDS:%=$(B)/results_%.jsonl)

# The paid step. The submit script is order-only: editing it must not resubmit anything.
$(B)/batch_%.id: $(B)/chunk_%.jsonl | scripts/submit_batch.py $(VENV_OK)
	$(PY) scripts/submit_batch.py $< --config $(CONFIG) --step $(STEP) \
	  $(if $(TOKEN_BUDGET),--token-budget $(TOKEN_BUDGET)) --lock-dir $(BUILD)/.locks -o $@

$(B)/results_%.jsonl: $(B)/batch_%.id | scripts/fetch_results.py $(VENV_OK)
	$(PY) scripts/fetch_results.py $< --chunk $(B)/chunk_$*.jsonl --config $(CONFIG) \
	  --step $(STEP) --retries $(RETRIES) $(if $(TOKEN_BUDGET),--token-budget $(TOKEN_BUDGET)) \
	  --lock-dir $(BUILD)/.locks --answers $(B)/answers -o $@

$(MERGED): $(INPUT) $(B)/requests.jsonl $(B)/chunks.mk $(RESULTS) $(B)/merge.params scripts/merge_results.py | $(VENV_OK)
	$(PY) scripts/merge_results.py --input $(INPUT) --requests $(B)/requests.jsonl \
	  --answers $(B)/answers --config $(CONFIG) --step $(STEP) --data-key $(call q,$(DATA_KEY)) \
	  --response-key $(call q,$(RESPONSE_KEY)) --errors $(B)/errors.jsonl -o $@

# ----------------------------------------------------------------------------- verbs
.PHONY: help
## help          this list
help:
	@echo "Targets:"
	@grep -hE '^## [a-z]+ ' $(MAKEFILE_LIST) | grep -vE '^## [A-Z_]' | sed 's/^## /  make /'
	@echo "Variables (make caption STEP=article_filter INPUT=data/my.json):"
	@grep -hE '^## [A-Z_]+' $(MAKEFILE_LIST) | sed 's/^## /  /'

.PHONY: caption
## caption       run STEP over INPUT: requests, batches, results, merged.json in build/NAME/STEP
caption: $(MERGED)
	@n=$$(grep -c '' $(B)/errors.jsonl || true); \
	  echo "$(MERGED) is up to date; $$n request(s) failed$$( [ $$n = 0 ] || echo ": see $(B)/errors.jsonl")"
	$(if $(OUTPUT),@$(PY) scripts/write_if_changed.py $(call q,$(OUTPUT)) --from $(MERGED))
	@if [ "$(STRICT)" = 1 ] && [ -s $(B)/errors.jsonl ]; then \
	  echo "error: STRICT=1 and $$(grep -c '' $(B)/errors.jsonl) request(s) failed; see $(B)/errors.jsonl" >&2; exit 1; fi

.PHONY: pipeline
## pipeline      run STEPS (or the config's pipeline:) in order, each on the previous step's output
pipeline: | $(VENV_OK)
	@steps="$(STEPS)"; \
	  [ -n "$$steps" ] || steps=$$($(PY) scripts/pipeline_steps.py $(CONFIG)); \
	  input=$(call q,$(INPUT)); k=0; \
	  for step in $$steps; do \
	    k=$$((k + 1)); dir=$(BUILD)/$(NAME)/pipeline/$$(printf %02d $$k)-$$step; \
	    echo "== step $$k: $$step ($$dir)"; \
	    $(MAKE) --no-print-directory caption STEP=$$step INPUT="$$input" B=$$dir NAME=$(NAME) OUTPUT=; \
	    input=$$dir/merged.$(if $(filter %.jsonl,$(INPUT)),jsonl,json); \
	  done; \
	  echo "pipeline done: $$input"; \
	  $(if $(OUTPUT),$(PY) scripts/write_if_changed.py $(call q,$(OUTPUT)) --from "$$input")

.PHONY: plan
## plan          what STEP would send and cost, without calling the API
plan: | $(VENV_OK)
	$(PY) scripts/plan.py --input $(INPUT) --config $(CONFIG) --step $(STEP) \
	  --data-key $(call q,$(DATA_KEY)) --max-requests $(MAX_REQUESTS) --max-bytes $(MAX_BYTES) \
	  --answers $(B)/answers

.PHONY: report
## report        per chunk and in total: successes, failures, tokens, cost, time (submits nothing)
report: | $(VENV_OK)
	$(PY) scripts/report.py --dir $(B) --config $(CONFIG) -o $(B)/report.json

.PHONY: gallery
## gallery       a static gallery.html of images beside their responses (after make caption)
gallery: | $(VENV_OK)
	$(PY) scripts/gallery.py --dir $(B) --merged $(MERGED) --config $(CONFIG) --step $(STEP) \
	  --response-key $(call q,$(RESPONSE_KEY)) --input $(INPUT) --data-key $(call q,$(DATA_KEY)) \
	  -o $(B)/gallery.html

.PHONY: status
## status        the last LIMIT batches on the account (FILTER: jq over each batch)
status: | $(VENV_OK)
	$(PY) scripts/batches.py status --config $(CONFIG) --limit $(LIMIT) --filter $(call q,$(FILTER))

.PHONY: check
## check         one batch, readable: make check BATCH=batch_...
check: | $(VENV_OK)
	$(PY) scripts/batches.py check --config $(CONFIG) $(call q,$(BATCH))

.PHONY: cancel
## cancel        cancel STEP's batches still in flight
cancel: | $(VENV_OK)
	$(PY) scripts/batches.py cancel --config $(CONFIG) --dir $(B)

.PHONY: emulator
## emulator      serve the local Batch API emulator in the foreground on PORT
emulator: | $(VENV_OK)
	$(PY) scripts/emulator.py --host 127.0.0.1 --port $(PORT) --state-dir $(BUILD)/emulator

.PHONY: demo
## demo          the whole pipeline on the example data, against the emulator (no key needed)
demo: | $(VENV_OK)
	$(PY) scripts/with_emulator.py --state-dir $(BUILD)/demo/emulator -- \
	  $(MAKE) --no-print-directory pipeline BUILD=$(BUILD)/demo INPUT=data/example.json \
	  CONFIG=configs/example.yaml
	$(PY) scripts/show.py $(BUILD)/demo/example/pipeline/02-caption/merged.json

.PHONY: test
## test          lint, then the test suite (real make, scripts, HTTP and SDK against the emulator)
test: lint | $(VENV_OK)
	$(PY) -m pytest -n 2 -q

.PHONY: lint
lint: | $(VENV_OK)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

.PHONY: bench
## bench         time every stage on N synthetic records against the emulator
bench: | $(VENV_OK)
	$(PY) scripts/bench.py --n $(N)

.PHONY: clean
## clean         remove build/ (results included: they are paid for, so think twice)
clean:
	rm -rf $(BUILD)
