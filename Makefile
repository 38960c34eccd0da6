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
PORT ?= 8080

.PHONY: setup tools demo test lint train evaluate experiment serve bench bench-memory synth checkov local scale redrive image clean

# --- set-up: a virtual environment and the pinned CDK CLI, rebuilt when a requirements file changes
$(VENV)/.installed: requirements.txt requirements-dev.txt container/requirements.txt lambda/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed

# --- the two README commands
demo: setup
	@if [ -f $(MODEL)/triage_artifact.json ]; then echo "Reusing the trained model in $(MODEL) (make train to retrain)"; \
	else $(MAKE) --no-print-directory train; fi
	$(PY) -m local_pipeline demo --model $(MODEL)

# The whole suite, slow tests included (~a few minutes); `$(PY) -m pytest -m "not slow"` for a quick loop.
test: setup tools lint
	$(PY) -m pytest -m "slow or not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# --- training
train: $(VENV)/.installed
	$(PY) -m training train --output $(MODEL)

evaluate: $(VENV)/.installed
	$(PY) -m training evaluate --model $(MODEL) --data $(DATA) --out $(OUT)

# train a set of strategies, ranked on the validation split: make experiment [SET=selection|ablation] [ROWS=a,b]
experiment: $(VENV)/.installed
	$(PY) -m training experiment --set $(or $(SET),ablation) $(if $(ROWS),--rows $(ROWS))

# --- serving
serve: $(VENV)/.installed
	MODEL_DIR=$(MODEL) SAGEMAKER_BIND_TO_PORT=$(PORT) $(PY) -m inference_server serve

bench: $(VENV)/.installed
	$(PY) -m benchmarks.serving --model $(MODEL)

# 1 GB JSON Lines and gzip bodies through the real server, and the dispatcher's reader: peak RSS (minutes)
bench-memory: $(VENV)/.installed
	$(PY) -m benchmarks.serving_memory --model $(MODEL)

image:
	bash container/build_image.sh $(MODEL)

# --- infrastructure
synth: setup
	npx --no-install cdk synth --quiet --output cdk.out

# checkov pins an older boto3 than the project: it gets its own venv inside .venv/ (ignored by git and ruff)
CHECKOV := $(VENV)/checkov/bin/checkov
$(CHECKOV): requirements-checkov.txt
	test -x $(VENV)/checkov/bin/python || $(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

# The SageMaker SDK (only to launch training jobs) gets its own venv too: v2 pins older
# protobuf/attrs, and v3 would downgrade protobuf and rich (training/sagemaker_launcher.py says why).
SAGEMAKER_SDK := $(VENV)/sagemaker/.installed
$(SAGEMAKER_SDK): requirements-sagemaker.txt
	test -x $(VENV)/sagemaker/bin/python || $(PYTHON) -m venv $(VENV)/sagemaker
	$(VENV)/sagemaker/bin/pip install --quiet -r requirements-sagemaker.txt
	touch $@

# side environments the test suite uses (checkov scan, SageMaker SDK estimator test)
tools: $(CHECKOV) $(SAGEMAKER_SDK)

checkov: synth $(CHECKOV)
	$(CHECKOV) -d cdk.out --framework cloudformation --skip-download --compact --quiet

# --- local async pipeline
local: $(VENV)/.installed
	$(PY) -m local_pipeline up --model $(MODEL)

# a generated file through the real dispatcher and aggregator on the local stack, stub model (no
# model needed); the last line is one JSON object: make scale [TICKETS=100000]
scale: $(VENV)/.installed
	$(PY) -m local_pipeline.scale --tickets $(or $(TICKETS),1000000)

# --- operations
# replay the Lambdas' dead-letter queues into their functions:
# make redrive STACK=TicketTriage | LOCAL=1 (local-stack.json)  [FUNCTION=dispatcher] [DRY_RUN=1]
redrive: $(VENV)/.installed
	$(PY) -m ticket_pipeline.redrive $(if $(LOCAL),--local,--stack $(or $(STACK),TicketTriage)) \
		$(if $(FUNCTION),--function $(FUNCTION)) $(if $(DRY_RUN),--dry-run)

clean:
	rm -rf cdk.out .pytest_cache local-stack.json artifacts/scale
