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
## MAX_REQUESTS  requests per batch (at most 50000; provider: anthropic 100000)
MAX_REQUESTS ?= 1000
## MAX_BYTES     bytes per batch input file (OpenAI allows 200 MB, Anthropic 256 MB, Gemini 2 GB)
MAX_BYTES ?= 180000000
## RETRIES       follow-up batches for retryable failures (429, 5xx, expired)
RETRIES ?= 3
## PREFLIGHT     1: check image URLs first, skipping records whose image fails; 0: off
PREFLIGHT ?= 1
## IMAGE_ROOT    the folder local image paths are relative to (default: INPUT's folder)
IMAGE_ROOT ?=
## TOKEN_BUDGET  estimated input tokens in flight per model (MODE=live: sent per minute); default: config token_budget
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
## PEER_PYTHON   `make bench`: a Python with autobatcher installed, to time the leanest peer too
PEER_PYTHON ?=
## PORT          `make emulator`: the port to serve on
PORT ?= 8000
# Quote a value for the shell (DATA_KEY may be a jq expression with spaces and quotes).
q = '$(subst ','\'',$(1))'
## MODE          batch (default), live (the synchronous API) or flex (its flex tier); default: the config's mode:
MODE ?=
## CONCURRENCY   MODE=live/flex and `make sample`: requests in flight at once
CONCURRENCY ?= 8
## SAMPLE, SEED  `make sample`: first (the first N records) or random (N picked with SEED)
SAMPLE ?= first
SEED ?= 0
# `make sample`'s N defaults to 10 (bench's to 100000): what was typed, before it is fixed below.
SAMPLE_N := $(if $(filter command environment,$(firstword $(origin N))),$(value N),10)
## DRY_RUN       `make tidy`: 1 lists what it would delete, and deletes nothing
DRY_RUN ?= 0
## MAX_COST      USD: stop before the first upload when the plan's estimate is above it
MAX_COST ?=
## RESEND        1: send again an unanswered create (server cannot list batches) or a batch whose results are gone (tidied, then build/ deleted)
RESEND ?= 0
## BUILD         the build root (a step's directory: $(BUILD)/<input stem>-<hash>/<step>)
BUILD ?= build
# A value given on the command line or in the environment is text, never make syntax: make
# would otherwise run the `$(shell ...)` in INPUT='x$(shell ...).json' and read
# data/price$list.json as data/priceist.json. From here on each is a simple variable holding
# exactly what was typed (B, NAME and FMT too: `make pipeline` passes them on).
USER_VARIABLES := INPUT CONFIG STEP STEPS DATA_KEY RESPONSE_KEY OUTPUT MAX_REQUESTS MAX_BYTES \
  RETRIES PREFLIGHT IMAGE_ROOT TOKEN_BUDGET STRICT LIMIT FILTER BATCH N PORT DRY_RUN MAX_COST \
  RESEND BUILD B NAME FMT MODE CONCURRENCY SAMPLE SEED PEER_PYTHON
$(foreach v,$(USER_VARIABLES),$(if $(filter command environment,$(firstword $(origin $(v)))),\
  $(eval override $(v) := $$(value $(v)))))
# A step name is one path component of letters, digits, _ . and - (not . or ..), so a step's
# directory stays inside BUILD; checked for STEP and every word of STEPS before anything runs.
STEP_CHARACTERS := A B C D E F G H I J K L M N O P Q R S T U V W X Y Z \
  a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9 _ . -
comma := ,
# $(1) without the characters $(2): <> around the step stays exactly <> for a safe name.
without = $(if $(2),$(call without,$(subst $(firstword $(2)),,$(1)),$(wordlist 2,$(words $(2)),$(2))),$(1))
step_error = $(if $(1),$(if $(filter-out <>,$(call without,<$(1)>,$(STEP_CHARACTERS)))$(filter . ..,$(1)),\
  $(error STEP=$(1) is not a step name: use letters$(comma) digits$(comma) _ . and - only (one path component$(comma) not . or ..))),\
  $(error STEP is empty; set STEP to a step of CONFIG))
$(call step_error,$(STEP))
$(foreach s,$(STEPS),$(call step_error,$(s)))
# The build directory of INPUT: its readable stem and a hash of its absolute path, so two
# inputs never share one (scripts/build_name.py); and whether merged output is .json or .jsonl.
ifeq ($(origin NAME)$(origin FMT),undefinedundefined)
# The project's own Python once it exists (a shim such as pyenv's costs a shell per call).
_NAME_FMT := $(shell $(firstword $(wildcard .venv/bin/python) python3) scripts/build_name.py $(call q,$(INPUT)))
NAME := $(word 1,$(_NAME_FMT))
FMT := $(word 2,$(_NAME_FMT))
endif
FMT ?= json
## B             the step's build directory
B ?= $(BUILD)/$(NAME)/$(STEP)
# Goals that read INPUT and CONFIG check them first: one line, before anything runs.
ifneq ($(filter caption gallery sample $(B)/%,$(MAKECMDGOALS)),)
_INPUT_IS := $(shell { [ -f $(call q,$(INPUT)) ] && echo file; } || { [ -d $(call q,$(INPUT)) ] && echo directory; } || true)
ifeq ($(_INPUT_IS),directory)
$(error INPUT=$(INPUT) is a directory, not a file; set INPUT=path/to/data.json (a JSON list, or .jsonl))
endif
ifneq ($(_INPUT_IS),file)
$(error INPUT=$(INPUT) does not exist; set INPUT=path/to/data.json (a JSON list, or .jsonl))
endif
ifneq ($(shell [ -f $(call q,$(CONFIG)) ] && echo ok),ok)
$(error CONFIG=$(CONFIG) does not exist; set CONFIG=path/to/config.yaml)
endif
endif
ifneq ($(words $(B)),1)
$(error BUILD=$(BUILD) has a space; make cannot name targets in it: choose another BUILD)
endif

VENV := .venv
# The library under the commands (scripts/br/): its ground floor and three rooms. A stage is
# rebuilt when any module of a package it uses changes; the paid step is order-only on its own
# (results.list below), so an edit never resends anything.
LIB := $(wildcard scripts/br/*.py)
PROMPTS := $(wildcard scripts/br/prompts/*.py scripts/br/prompts/*/*.py)
BATCHES := $(wildcard scripts/br/batches/*.py scripts/br/batches/*/*.py)
ANSWERS := $(wildcard scripts/br/answers/*.py scripts/br/answers/*/*.py)
PY := $(VENV)/bin/python
VENV_OK := $(VENV)/.installed
MERGED := $(B)/merged.$(FMT)
# User values reach recipes through the environment, never pasted into a command line.
export BR_INPUT := $(value INPUT)
export BR_CONFIG := $(value CONFIG)
export BR_OUTPUT := $(value OUTPUT)
export BR_IMAGE_ROOT := $(value IMAGE_ROOT)
# CONFIG as parsed, kept by the stamps' process for the run's later scripts (br/config_cache.py).
export BR_CONFIG_CACHE = $(B)/config.json
# make_requests and plan: where local images are (and resized ones kept), and the preflight.
IMAGE_ARGS = $(if $(IMAGE_ROOT),--image-root "$$BR_IMAGE_ROOT") --images $(call q,$(B)/images) \
  $(if $(filter 0,$(PREFLIGHT)),,--preflight-cache $(call q,$(B)/preflight.json))
# After the split's and the merge's scripts: an output that came out byte-identical keeps its
# bytes and its mtime, and is then given its newest prerequisite's mtime (never an older one), so
# the next make sees it up to date instead of running the stage again on every make (a script or
# the library edited, or the tool upgraded, without changing the output). Only where no file
# rule follows on its mtime (results.list always runs; make caption is phony); requests.jsonl's
# would re-split, so it keeps today's rule: rewritten only when it changes.
settle = newest=$$(ls -td -- $(foreach p,$^,$(call q,$(p))) | head -n 1); \
  [ $(call q,$@) -nt "$$newest" ] || touch -c -r "$$newest" $(call q,$@)
# Phony, or the bare .SECONDARY: would let make skip it, and the stamps would never update.
.PHONY: FORCE
FORCE:

# ----------------------------------------------------------------------------- environment
# Built once from pyproject.toml; rebuilt when it changes.
$(VENV_OK): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	  print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))' \
	  | xargs -d '\n' $(VENV)/bin/python -m pip install --quiet
	touch $@

# The scripts' bytecode, compiled once after each change of the code. A Python told to write
# none (PYTHONDONTWRITEBYTECODE, common in containers) would otherwise compile every module of
# every process of a run again on each make: 0.1 s to 0.4 s of CPU a run. `make bench` warms it.
# Best effort: a checkout it cannot write to (shared, read-only) runs as before, and a module
# that does not compile says so when its script runs.
BYTECODE := $(VENV)/bytecode.stamp
$(BYTECODE): $(wildcard scripts/*.py scripts/*/*.py scripts/*/*/*.py scripts/*/*/*/*.py) | $(VENV_OK)
	@if [ -w scripts ]; then $(VENV)/bin/python -m compileall -q scripts >/dev/null 2>&1; fi; \
	  touch $@ 2>/dev/null || true

# ----------------------------------------------------------------------------- the pipeline
# Stamps: what shapes each file (the content of INPUT and CONFIG, not their mtimes, and the
# variables), each rewritten only when it changes. All five from one process on every make:
# `stamps` writes them, and each stamp is made by it (an empty recipe; make then reads its
# mtime, so only what a changed stamp shapes is rebuilt: a grouped target `&:` would rebuild
# everything after every one). `make <stamp>` writes the five.
# (caption checks the same lines again before it says "up to date": INPUT may change mid-run.)
REQUEST_PARAMS = --hash INPUT="$$BR_INPUT" \
  --hash CONFIG="$$BR_CONFIG" $(call q,STEP=$(STEP)) $(call q,DATA_KEY=$(DATA_KEY)) $(call q,RESPONSE_KEY=$(RESPONSE_KEY)) \
  IMAGE_ROOT="$$BR_IMAGE_ROOT" $(call q,PREFLIGHT=$(PREFLIGHT))
STAMPS := $(B)/requests.params $(B)/images.stamp $(B)/split.params $(B)/merge.params $(B)/run.params
# images.stamp changes when a local image the requests use changes (or while image URLs fail
# the preflight, so they are checked again): requests.jsonl follows the images' bytes, not just
# the input's. split.params holds the step's provider: (a config whose provider cannot be read
# stops make here, in one line, with no stamp written and nothing sent).
.PHONY: stamps
stamps: | $(VENV_OK) $(BYTECODE)
	@$(PY) scripts/write_if_changed.py $(call q,$(B)/requests.params) $(REQUEST_PARAMS) \
	  --and $(call q,$(B)/images.stamp) \
	    --images $(call q,$(B)/images) $(call q,$(B)/preflight.json) \
	  --and $(call q,$(B)/split.params) $(call q,MAX_REQUESTS=$(MAX_REQUESTS)) \
	    $(call q,MAX_BYTES=$(MAX_BYTES)) --provider "$$BR_CONFIG" $(call q,$(STEP)) \
	  --and $(call q,$(B)/merge.params) $(call q,RESPONSE_KEY=$(RESPONSE_KEY)) \
	  --and $(call q,$(B)/run.params) --run "$$BR_CONFIG" $(call q,$(STEP)) $(call q,$(MODE)) \
	    $(call q,$(MAX_COST))
$(STAMPS): stamps ;

$(B)/requests.jsonl: $(B)/requests.params $(B)/images.stamp scripts/make_requests.py $(LIB) $(PROMPTS) | $(VENV_OK)
	$(PY) scripts/make_requests.py --input "$$BR_INPUT" --config "$$BR_CONFIG" \
	  --step $(call q,$(STEP)) --data-key $(call q,$(DATA_KEY)) $(IMAGE_ARGS) -o $(call q,$@) \
	  --response-key $(call q,$(RESPONSE_KEY)) \
	  --skipped $(call q,$(B)/skipped.jsonl)

# The split, and chunks.mk listing the chunks. Before a re-split, every batch this step ever
# sent and never fetched is collected into answers/: a changed input never abandons one. The
# collection reads the step's ledger.jsonl alone, so without one (nothing ever sent: a first
# run) it is not started. live.sent (touched when a live run or a sample sends): answers/ holds
# answers the chunks do not know of, so the split is made again, leaving them out.
$(B)/chunks.mk: $(B)/requests.jsonl $(B)/split.params $(wildcard $(B)/live.sent) scripts/split_requests.py $(LIB) $(PROMPTS) $(BATCHES) | $(VENV_OK)
	if [ -e $(call q,$(B)/ledger.jsonl) ]; then $(PY) scripts/run_batches.py --collect \
	  --dir $(call q,$(B)) --config "$$BR_CONFIG" --step $(call q,$(STEP)); fi
	$(PY) scripts/split_requests.py $(call q,$<) --answers $(call q,$(B)/answers) \
	  --max-requests $(call q,$(MAX_REQUESTS)) --max-bytes $(call q,$(MAX_BYTES)) \
	  --config "$$BR_CONFIG" --step $(call q,$(STEP)) -o $(call q,$@)
	@$(settle)

# The paid step, every chunk in one process: all batches in flight (within the token budget)
# before any wait, then batch_NNN.id -> results_NNN.jsonl for each; results.list names them
# and changes only when a results file does. Its script is order-only: editing it must not
# resubmit anything, and a rerun sends nothing for a chunk whose results are newer than it.
RUN_BATCHES = $(PY) scripts/run_batches.py --dir $(call q,$(B)) --config "$$BR_CONFIG" \
  --step $(call q,$(STEP)) --retries $(call q,$(RETRIES)) \
  $(if $(TOKEN_BUDGET),--token-budget $(call q,$(TOKEN_BUDGET))) $(if $(filter 1,$(RESEND)),--resend)
# MAX_COST (or the config's max_cost:): the plan's estimate of what is still to send is checked
# first, by every recipe that uploads, so a run over the cap stops before its first upload; and
# so is OUTPUT (in the same process: --output), which is written only after the batches are paid.
CHECK_OUTPUT = $(PY) scripts/write_if_changed.py "$$BR_OUTPUT" --writable
COST = $(PY) scripts/plan.py --input "$$BR_INPUT" --config "$$BR_CONFIG" \
  --step $(call q,$(STEP)) --requests $(call q,$(B)/requests.jsonl) \
  --answers $(call q,$(B)/answers) --max-cost $(call q,$(MAX_COST)) --mode $(call q,$(MODE)) \
  $(if $(OUTPUT),--output "$$BR_OUTPUT")
CHECK_COST = @$(COST)
# MODE=live or flex (or the config's mode:): the same files through the synchronous API
# (run_live.py), CONCURRENCY requests at once; it creates no batch.
RUN_LIVE = $(PY) scripts/run_live.py --dir $(call q,$(B)) --config "$$BR_CONFIG" \
  --step $(call q,$(STEP)) --mode $(call q,$(MODE)) \
  $(if $(TOKEN_BUDGET),--token-budget $(call q,$(TOKEN_BUDGET)))
# The cost check (and OUTPUT's) prints the step's mode (one process for all three); with no
# cap, no OUTPUT and batch mode (run.params says RUN=batch) there is nothing to ask it.
$(B)/results.list: $(B)/chunks.mk $(B)/run.params FORCE | scripts/run_batches.py scripts/run_live.py $(VENV_OK)
	@if $(if $(OUTPUT),false,[ "$$(cat $(call q,$(B)/run.params))" = RUN=batch ]); then \
	  mode=plain; else mode=$$($(COST) --print-mode) || exit; fi; \
	  if [ "$$mode" = plain ]; then set -x; $(RUN_BATCHES) --plain $(call q,$(MODE)) -o $(call q,$@); \
	  elif [ "$$mode" = batch ]; then set -x; $(RUN_BATCHES) -o $(call q,$@); else set -x; \
	  $(RUN_LIVE) --concurrency $(call q,$(CONCURRENCY)) --retries $(call q,$(RETRIES)) -o $(call q,$@); fi

# One chunk by hand: make build/<input>/<step>/batch_007.id, or .../results_007.jsonl. The
# chunks come from the split: a chunk file older than chunks.mk is simply unchanged.
$(B)/chunk_%.jsonl: | $(B)/chunks.mk
	@[ -f $(call q,$@) ] || { echo error: $(call q,$@ is not a chunk of this split (see chunks.mk)) >&2; exit 1; }
$(B)/batch_%.id: $(B)/chunk_%.jsonl | scripts/submit_batch.py $(VENV_OK)
	$(CHECK_COST)
	$(PY) scripts/submit_batch.py $(call q,$<) --config "$$BR_CONFIG" --step $(call q,$(STEP)) \
	  $(if $(filter 1,$(RESEND)),--resend) -o $(call q,$@)
$(B)/results_%.jsonl: $(B)/chunk_%.jsonl | scripts/run_batches.py $(VENV_OK)
	$(CHECK_COST)
	$(RUN_BATCHES) --only $(call q,$*)

$(MERGED): $(B)/requests.params $(B)/requests.jsonl $(B)/results.list $(B)/merge.params scripts/merge_results.py $(LIB) $(PROMPTS) $(ANSWERS) | $(VENV_OK)
	$(PY) scripts/merge_results.py --input "$$BR_INPUT" --requests $(call q,$(B)/requests.jsonl) \
	  --answers $(call q,$(B)/answers) --config "$$BR_CONFIG" --step $(call q,$(STEP)) \
	  --data-key $(call q,$(DATA_KEY)) --response-key $(call q,$(RESPONSE_KEY)) \
	  --errors $(call q,$(B)/errors.jsonl) --skipped $(call q,$(B)/skipped.jsonl) $(IMAGE_ARGS) \
	  -o $(call q,$@)
	@$(settle)

# ----------------------------------------------------------------------------- verbs
.PHONY: help
## help          this list
help:
	@echo "Targets:"
	@grep -hE '^## [a-z]+ ' $(MAKEFILE_LIST) | grep -vE '^## [A-Z_]' | sed 's/^## /  make /'
	@echo "Variables (make caption STEP=article_filter INPUT=data/my.json):"
	@grep -hE '^## [A-Z_]+' $(MAKEFILE_LIST) | sed 's/^## /  /'

.PHONY: caption
## caption       run STEP over INPUT: requests, batches, results, merged.json in BUILD/<input>-<hash>/STEP
caption: $(MERGED)
	@$(PY) scripts/write_if_changed.py --check $(call q,$(B)/requests.params) $(REQUEST_PARAMS) \
	  $(if $(OUTPUT),--and "$$BR_OUTPUT" --from $(call q,$(MERGED)))
	@m=$(call q,$(MERGED)); e=$(call q,$(B)/errors.jsonl); n=$$(grep -c '' "$$e" || true); \
	  echo "$$m is up to date; $$n request(s) failed$$( [ $$n = 0 ] || echo ": see $$e")"; \
	  if [ $(call q,$(STRICT)) = 1 ] && [ -s "$$e" ]; then \
	    echo "error: STRICT=1 and $$n request(s) failed; see $$e" >&2; exit 1; fi

.PHONY: pipeline
## pipeline      run STEPS (or the config's pipeline:) in order, each on the previous step's output
pipeline: | $(VENV_OK)
	@$(if $(OUTPUT),$(CHECK_OUTPUT);) steps=$(call q,$(STEPS)); \
	  [ -n "$$steps" ] || steps=$$($(PY) scripts/pipeline_steps.py "$$BR_CONFIG"); \
	  input="$$BR_INPUT"; k=0; root="$${BR_IMAGE_ROOT:-$$(dirname "$$BR_INPUT")}"; \
	  for step in $$steps; do \
	    k=$$((k + 1)); dir=$(call q,$(BUILD)/$(NAME))/pipeline/$$(printf %02d $$k)-$$step; \
	    echo "== step $$k: $$step ($$dir)"; \
	    $(MAKE) --no-print-directory caption STEP="$$step" INPUT="$$input" B="$$dir" \
	      NAME=$(call q,$(NAME)) FMT=$(call q,$(FMT)) OUTPUT= IMAGE_ROOT="$$root"; \
	    input="$$dir/merged.$(FMT)"; \
	  done; \
	  echo "pipeline done: $$input"; \
	  if [ -n "$$BR_OUTPUT" ]; then $(PY) scripts/write_if_changed.py "$$BR_OUTPUT" --from "$$input"; fi

.PHONY: plan
## plan          what STEP would send and cost, without calling the API
plan: | $(VENV_OK)
	@$(PY) scripts/plan.py --input "$$BR_INPUT" --config "$$BR_CONFIG" --step $(call q,$(STEP)) \
	  --data-key $(call q,$(DATA_KEY)) --max-requests $(call q,$(MAX_REQUESTS)) \
	  --max-bytes $(call q,$(MAX_BYTES)) --answers $(call q,$(B)/answers) $(IMAGE_ARGS) \
	  --response-key $(call q,$(RESPONSE_KEY)) --mode $(call q,$(MODE))

.PHONY: sample
## sample        try STEP on N records (default 10) through the live API: prompts, answers, cost; sample.json
sample: | $(VENV_OK)
	@$(PY) scripts/sample.py --input "$$BR_INPUT" --config "$$BR_CONFIG" --step $(call q,$(STEP)) \
	  --data-key $(call q,$(DATA_KEY)) --dir $(call q,$(B)) --n $(call q,$(SAMPLE_N)) \
	  --sample $(call q,$(SAMPLE)) --seed $(call q,$(SEED)) --concurrency $(call q,$(CONCURRENCY)) \
	  --retries $(call q,$(RETRIES)) --mode $(call q,$(MODE)) \
	  --response-key $(call q,$(RESPONSE_KEY)) $(IMAGE_ARGS)

.PHONY: preflight
## preflight     check STEP's image URLs now, as make caption does first (failures: preflight.jsonl)
preflight: | $(VENV_OK)
	$(PY) scripts/preflight.py --input "$$BR_INPUT" --config "$$BR_CONFIG" \
	  --step $(call q,$(STEP)) --data-key $(call q,$(DATA_KEY)) \
	  --cache $(call q,$(B)/preflight.json) -o $(call q,$(B)/preflight.jsonl)

.PHONY: report
## report        per chunk and in total: successes, failures, tokens, cost, time (submits nothing)
report: | $(VENV_OK)
	$(PY) scripts/report.py --dir $(call q,$(B)) --config "$$BR_CONFIG" \
	  --max-cost $(call q,$(MAX_COST)) -o $(call q,$(B)/report.json)

.PHONY: gallery
## gallery       a static gallery.html of images beside their responses (after make caption)
gallery: | $(VENV_OK)
	$(PY) scripts/gallery.py --dir $(call q,$(B)) --merged $(call q,$(MERGED)) \
	  --config "$$BR_CONFIG" --step $(call q,$(STEP)) --response-key $(call q,$(RESPONSE_KEY)) \
	  --input "$$BR_INPUT" --data-key $(call q,$(DATA_KEY)) -o $(call q,$(B)/gallery.html) \
	  $(if $(IMAGE_ROOT),--image-root "$$BR_IMAGE_ROOT")

.PHONY: status
## status        the last LIMIT batches on the account (FILTER: jq over each batch)
status: | $(VENV_OK)
	$(PY) scripts/batches.py status --config "$$BR_CONFIG" --step $(call q,$(STEP)) --limit $(call q,$(LIMIT)) \
	  --filter $(call q,$(FILTER))

.PHONY: check
## check         one batch, readable: make check BATCH=batch_...
check: | $(VENV_OK)
	$(PY) scripts/batches.py check --config "$$BR_CONFIG" --step $(call q,$(STEP)) $(call q,$(BATCH))

.PHONY: cancel
## cancel        cancel STEP's batches still in flight
cancel: | $(VENV_OK)
	$(PY) scripts/batches.py cancel --config "$$BR_CONFIG" --step $(call q,$(STEP)) --dir $(call q,$(B))

.PHONY: tidy
## tidy          delete STEP's files on the server whose results are in answers/ (DRY_RUN=1: list)
tidy: | $(VENV_OK)
	$(PY) scripts/tidy.py --dir $(call q,$(B)) --config "$$BR_CONFIG" --step $(call q,$(STEP)) \
	  $(if $(filter 1,$(DRY_RUN)),--dry-run)

.PHONY: emulator
## emulator      serve the local Batch API emulator in the foreground on PORT
emulator: | $(VENV_OK)
	$(PY) scripts/emulator.py --host 127.0.0.1 --port $(call q,$(PORT)) \
	  --state-dir $(call q,$(BUILD)/emulator)

DEMO_NAME = $(word 1,$(shell python3 scripts/build_name.py data/example.json))
.PHONY: demo
## demo          the whole pipeline on the example data, against the emulator (no key needed)
demo: | $(VENV_OK)
	$(PY) scripts/with_emulator.py --state-dir $(call q,$(BUILD)/demo/emulator) -- \
	  $(MAKE) --no-print-directory pipeline BUILD=$(call q,$(BUILD)/demo) \
	  INPUT=data/example.json CONFIG=configs/example.yaml PREFLIGHT=0
	$(PY) scripts/show.py $(call q,$(BUILD)/demo/$(DEMO_NAME)/pipeline/02-caption/merged.json)
	@echo "== the same caption step on each provider (configs/providers.yaml)"
	$(PY) scripts/with_emulator.py --state-dir $(call q,$(BUILD)/demo/emulator) -- \
	  $(MAKE) --no-print-directory demo-providers BUILD=$(call q,$(BUILD)/demo)
	$(PY) scripts/show.py $(call q,$(BUILD)/demo/$(DEMO_NAME)/gemini/merged.json)

# make demo's second part (run by it, inside its emulator): one step on each provider.
.PHONY: demo-providers
demo-providers: | $(VENV_OK)
	@for step in openai claude gemini; do \
	  $(MAKE) --no-print-directory caption STEP=$$step INPUT=data/example.json \
	    CONFIG=configs/providers.yaml PREFLIGHT=0 || exit; done

.PHONY: test
## test          lint, then the test suite (real make, scripts, HTTP and SDK against the emulator)
test: lint | $(VENV_OK)
	$(PY) -m pytest -n 4 --dist worksteal -q

.PHONY: lint
## lint          ruff check and ruff format --check
lint: | $(VENV_OK)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

.PHONY: bench
## bench         time every stage on N synthetic records against the emulator
bench: | $(VENV_OK)
	$(PY) scripts/bench.py --n $(call q,$(N)) $(if $(PEER_PYTHON),--peer-python $(call q,$(PEER_PYTHON)))

.PHONY: clean
## clean         remove build/ (results included: they are paid for, so think twice)
clean:
	rm -rf -- $(call q,$(BUILD))
