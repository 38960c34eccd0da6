# The project's documented interface. `make demo` and `make test` are the two README commands.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONPATH := $(CURDIR):$(CURDIR)/container:$(CURDIR)/lambda

MODEL ?= artifacts/model
DATA ?= artifacts/splits/test.csv
OUT ?= artifacts/eval
# issue #23: the default as it was trained before a faster one is chosen (make train-reference),
# measured beside MODEL by make bench (default_vs_reference)
REFERENCE ?= artifacts/reference/model
PORT ?= 8080

# `make` alone lists the targets. A target is documented by the `## ` line right above it.
.DEFAULT_GOAL := help
.PHONY: help setup tools demo test lint train train-reference cascade train-student evaluate compare-models experiment serve bench bench-profile bench-timeline bench-memory synth checkov local scale chaos mutation redrive export-corrections image clean

# --- set-up: a virtual environment and the pinned CDK CLI, rebuilt when a requirements file changes
$(VENV)/.installed: requirements.txt requirements-dev.txt container/requirements.txt lambda/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## the virtual environment (requirements*.txt) and the pinned CDK CLI (package-lock.json)
setup: $(VENV)/.installed node_modules/.installed

# --- the two README commands
## README command 1: set up, train the default model if there is none, run the demo on the local stack
demo: setup
	@if [ -f $(MODEL)/triage_artifact.json ]; then echo "Reusing the trained model in $(MODEL) (make train to retrain)"; \
	else $(MAKE) --no-print-directory train; fi
	$(PY) -m local_pipeline demo --model $(MODEL)

# `$(PY) -m pytest -m "not slow"` for a quick loop.
## README command 2: lint, then the whole test suite, slow tests included (minutes)
test: setup tools lint
	$(PY) -m pytest -m "slow or not slow"

## ruff check and ruff format --check
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# With the fast tests that reach each module; the last line is one JSON object of scores
# (docs/mutation.md). make mutation [MODULE=<path>]
## mutation testing of the exactly-once core (ticket reader, jobs table, aggregation): mutmut scores
mutation: $(VENV)/.installed
	$(PY) -m mutation_testing $(if $(MODULE),--module $(MODULE))

# --- training
## fine-tune, export, evaluate into MODEL (~10 min on 2 cores), the linear baseline beside it; own data: [TICKETS=f.csv TEXT=col LABEL=col PRESET=auto|banking77|f.toml REVIEW_TARGET=0.95 REVIEW_MAX_SHARE=0.3 CORRECTIONS=dir|file|s3://...]
train: $(VENV)/.installed
	$(PY) -m training train --output $(MODEL) $(if $(TICKETS),--data $(TICKETS)) $(if $(TEXT),--text-column $(TEXT)) \
		$(if $(LABEL),--label-column $(LABEL)) $(if $(PRESET),--preset $(PRESET)) \
		$(if $(REVIEW_TARGET),--review-target-accuracy $(REVIEW_TARGET)) $(if $(REVIEW_MAX_SHARE),--review-max-share $(REVIEW_MAX_SHARE)) \
		$(if $(CORRECTIONS),--corrections $(CORRECTIONS))

# The same splits as make train (artifacts/splits); its own model, checkpoint and reports.
# The reference is the default before issue #23's cascade: the same recipe with --cascade off.
## train the reference (the default recipe without the confidence cascade) into REFERENCE's folder (artifacts/reference) for make bench
train-reference: $(VENV)/.installed
	$(PY) -m training train --preset banking77 --cascade off --output $(REFERENCE) --work-dir $(dir $(REFERENCE))work \
		--splits-dir artifacts/splits --reports-dir $(dir $(REFERENCE))reports

## choose an ensemble MODEL's confidence cascade on the validation split without re-training (training.cascade)
cascade: $(VENV)/.installed
	$(PY) -m training cascade --model $(MODEL) --splits-dir artifacts/splits --reports-dir $(dir $(MODEL))reports

# MiniLM cut to its bottom LAYERS (3) encoder layers, fine-tuned on the reference's soft labels
# (make train-reference first); compare it on validation (clean and noisy) before making it MODEL.
## distil a shallower student from the reference into artifacts/student: make train-student [LAYERS=3]
train-student: $(VENV)/.installed
	test -f $(dir $(REFERENCE))work/hf_model/config.json || { echo "make train-reference first"; exit 1; }
	$(PY) -m training.student --layers $(or $(LAYERS),3) --output ./artifacts/minilm-l$(or $(LAYERS),3)
	$(PY) -m training train --preset banking77 --base-model ./artifacts/minilm-l$(or $(LAYERS),3) \
		--distill-teachers $(dir $(REFERENCE))work/hf_model --output artifacts/student/model \
		--work-dir artifacts/student/work --splits-dir artifacts/splits --reports-dir artifacts/student/reports \
		--evaluate false

## score MODEL on DATA (the test split): per-class report, confusion matrix into OUT (artifacts/eval)
evaluate: $(VENV)/.installed
	$(PY) -m training evaluate --model $(MODEL) --data $(DATA) --out $(OUT)

# Both artifacts through ArtifactClassifier (the server's code); the last line is one JSON object.
# Exit 1 when a gate given is crossed, 2 when an input cannot be read (docs/deploy-and-operate.md).
## before deploying: score GOLDEN (DATA) with RUNNING (MODEL; dir, model.tar.gz or s3://) and CANDIDATE: agreement, per-category changes, review share; gates [MIN_AGREEMENT=0.9 MAX_REVIEW_SHARE=0.3 MAX_REVIEW_INCREASE=0.05 MAX_F1_DROP=0.01]
compare-models: $(VENV)/.installed
	$(if $(CANDIDATE),,$(error make compare-models needs CANDIDATE=<artifact dir, model.tar.gz or s3:// URI>))
	$(PY) -m training.compare --golden $(or $(GOLDEN),$(DATA)) --running $(or $(RUNNING),$(MODEL)) --candidate $(CANDIDATE) \
		$(if $(TEXT),--text-column $(TEXT)) $(if $(LABEL),--label-column $(LABEL)) \
		$(if $(MIN_AGREEMENT),--min-agreement $(MIN_AGREEMENT)) $(if $(MAX_REVIEW_SHARE),--max-review-share $(MAX_REVIEW_SHARE)) \
		$(if $(MAX_REVIEW_INCREASE),--max-review-increase $(MAX_REVIEW_INCREASE)) $(if $(MAX_F1_DROP),--max-f1-drop $(MAX_F1_DROP))

## train a set of strategies, ranked on the validation split: make experiment [SET=selection|ablation|noise] [ROWS=a,b] [TICKETS=f.csv TEXT=col LABEL=col]
experiment: $(VENV)/.installed
	$(PY) -m training experiment --set $(or $(SET),ablation) $(if $(ROWS),--rows $(ROWS)) $(if $(TICKETS),--data $(TICKETS)) \
		$(if $(TEXT),--text-column $(TEXT)) $(if $(LABEL),--label-column $(LABEL))

# --- serving
## run the inference server on MODEL, PORT (8080), through the image's entrypoint
serve: $(VENV)/.installed
	MODEL_DIR=$(MODEL) SAGEMAKER_BIND_TO_PORT=$(PORT) $(PY) -m inference_server serve

## serving benchmark: MODEL's server vs a baseline, bare ONNX Runtime and REFERENCE, as ratios in one run
bench: $(VENV)/.installed
	$(PY) -m benchmarks.serving --model $(MODEL) --reference $(REFERENCE)

## make bench without the torch baseline, py-spy sampling the server into artifacts/bench-profile.txt
bench-profile: $(VENV)/.installed
	mkdir -p artifacts
	$(PY) -m benchmarks.serving --model $(MODEL) --reference $(REFERENCE) --skip-baseline \
		--profile artifacts/bench-profile.txt

## where MODEL's server waits: its runners' model calls and idle gaps per bulk request (clean, then e-mail bodies)
bench-timeline: $(VENV)/.installed
	$(PY) -m benchmarks.timeline --model $(MODEL)
	$(PY) -m benchmarks.timeline --model $(MODEL) --email

## 1 GB JSON Lines and gzip bodies through the real server, and the dispatcher's reader: peak RSS (minutes)
bench-memory: $(VENV)/.installed
	$(PY) -m benchmarks.serving_memory --model $(MODEL)

## build the serving image with buildah and smoke-test it (root, no Docker engine needed)
image:
	bash container/build_image.sh $(MODEL)

# --- infrastructure
## synthesize the CDK app into cdk.out/ (offline; no Docker needed)
synth: setup
	npx --no-install cdk synth --quiet --output cdk.out

# checkov pins an older boto3 than the project: it gets its own venv inside .venv/ (ignored by git and ruff)
CHECKOV := $(VENV)/checkov/bin/checkov
$(CHECKOV): requirements-checkov.txt
	test -x $(VENV)/checkov/bin/python || $(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

# The SageMaker SDK v3 (only to launch training jobs) gets its own venv too: sagemaker-core caps
# protobuf<7 and rich<15 and sagemaker-train brings mlflow; next to the project it would downgrade
# protobuf and rich (training/sagemaker_launcher.py says why).
SAGEMAKER_SDK := $(VENV)/sagemaker/.installed
# Made afresh when the pin changes: v3's sagemaker-core/-train/-serve/-mlops all own
# sagemaker/__init__.py, which an in-place upgrade from v2 would uninstall.
$(SAGEMAKER_SDK): requirements-sagemaker.txt
	rm -rf $(VENV)/sagemaker
	$(PYTHON) -m venv $(VENV)/sagemaker
	$(VENV)/sagemaker/bin/pip install --quiet -r requirements-sagemaker.txt
	touch $@

## side environments the test suite uses (checkov scan, SageMaker SDK v3 launcher test)
tools: $(CHECKOV) $(SAGEMAKER_SDK)

## synth, then scan cdk.out/ with checkov
checkov: synth $(CHECKOV)
	$(CHECKOV) -d cdk.out --framework cloudformation --skip-download --compact --quiet

# --- local async pipeline
## start the local stack (moto, endpoint stand-in, server, Lambdas) and keep it up; writes local-stack.json
local: $(VENV)/.installed
	$(PY) -m local_pipeline up --model $(MODEL)

# No model needed: a stub model serves. The last line is one JSON object.
## a generated file through the real dispatcher and aggregator on the local stack: make scale [TICKETS=1000000]
scale: $(VENV)/.installed
	$(PY) -m local_pipeline.scale --tickets $(or $(TICKETS),1000000)

# Real handlers and inference server (a tiny model), an independent checker; the last line is one
# JSON object (docs/chaos.md): make chaos [SEEDS=20] [FIRST_SEED=1] [FILES=5] | make chaos SEED=7
## seeded faults at every boundary of the local stack, checked end to end: make chaos [SEEDS=20] | SEED=n
chaos: $(VENV)/.installed
	$(PY) -m chaos $(if $(SEED),--seed $(SEED),--seeds $(or $(SEEDS),20) --first-seed $(or $(FIRST_SEED),1)) \
		$(if $(FILES),--files $(FILES))

# --- operations
## replay the Lambdas' dead-letter queues: make redrive STACK=TicketTriage | LOCAL=1 [FUNCTION=dispatcher] [DRY_RUN=1]
redrive: $(VENV)/.installed
	$(PY) -m ticket_pipeline.redrive $(if $(LOCAL),--local,--stack $(or $(STACK),TicketTriage)) \
		$(if $(FUNCTION),--function $(FUNCTION)) $(if $(DRY_RUN),--dry-run)

## export the recorded corrections for make train CORRECTIONS=...: make export-corrections STACK=TicketTriage | LOCAL=1 [OUT=artifacts/corrections.jsonl]
export-corrections: $(VENV)/.installed
	$(PY) -m ticket_pipeline.export_corrections $(if $(LOCAL),--local,--stack $(or $(STACK),TicketTriage)) \
		--out $(or $(OUT),artifacts/corrections.jsonl)

## remove cdk.out, pytest cache, local-stack.json and scale artifacts
clean:
	rm -rf cdk.out .pytest_cache local-stack.json artifacts/scale

## list the targets, one line each, from the `## ` comment right above each one
help:
	@awk '/^## / { doc = substr($$0, 4); next } \
		/^[a-zA-Z][a-zA-Z0-9_-]*:/ && doc != "" { split($$0, t, ":"); printf "  make %-14s %s\n", t[1], doc } \
		{ doc = "" }' $(firstword $(MAKEFILE_LIST))
