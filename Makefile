# AI Factory. `make test` and `make run` build the virtual environment themselves.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.13 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov and pip-audit live in their own environment: their dependencies clash with the pins.
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
# The SAM CLI, aws-sam-translator and cfn-lint live in their own environment too: the SAM CLI
# pins boto3 exactly and the translator pins pydantic, and checkov pins older versions of both.
SAM := .venv-sam
SAM_STAMP := $(SAM)/.installed
# sam build looks for python3.13 on PATH; the venv provides it.
export PATH := $(CURDIR)/$(BIN):$(PATH)
# The project's tools reach no network of their own: no SAM CLI telemetry, and no EC2
# instance metadata lookups (botocore's credential and region search) on a developer machine.
export SAM_CLI_TELEMETRY := 0
export AWS_EC2_METADATA_DISABLED := true
# Options for `make run` / `make demo`, e.g. make run ARGS="--port 3001 --fresh".
ARGS ?=

# Every target with a `## ` note is listed by `make help`.
.PHONY: help docs chaos venv test run demo lint validate build bytecode bench mutate clean audit tools deploy sam schemathesis

help:  ## list the targets, one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(STAMP) $(SAM_STAMP)  ## build .venv and .venv-sam (every other target does it when needed)

$(STAMP): requirements-dev.txt layers/common/requirements.txt pyproject.toml client/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 13) else "Python 3.13 is needed: any 3.13.x will do (e.g. pyenv install 3.13), or name one with make PYTHON=/path/to/python3.13")'
	@echo "Building $(VENV) with $$($(PYTHON) --version) (once; about a minute)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "Installing the pinned requirements into $(VENV):"
	@# One line per package as pip collects it (pip's own failure still fails the build).
	set -o pipefail; $(BIN)/python -m pip install --progress-bar off \
		-r requirements-dev.txt -r layers/common/requirements.txt \
		| { grep --line-buffered -E '^(Collecting|ERROR)' || true; }
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@# The client library and its `aifactory` command (its dependencies are pinned above).
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e client
	@echo "$(VENV) is ready."
	@touch $@

tools: $(TOOLS_STAMP)  ## build .venv-tools (checkov, pip-audit)

$(TOOLS_STAMP): requirements-tools.txt
	@echo "Building $(TOOLS) with checkov and pip-audit (once)..."
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS)/bin/python -m pip install --quiet -r requirements-tools.txt
	@touch $@

sam: $(SAM_STAMP)  ## build .venv-sam (the SAM CLI, aws-sam-translator, cfn-lint)

$(SAM_STAMP): requirements-sam.txt
	@echo "Building $(SAM) with the SAM CLI, aws-sam-translator and cfn-lint (once; about a minute)..."
	$(PYTHON) -m venv $(SAM)
	$(SAM)/bin/python -m pip install --quiet --upgrade pip
	$(SAM)/bin/python -m pip install --quiet -r requirements-sam.txt
	@touch $@

test: $(STAMP) $(SAM_STAMP)  ## every test, as CI runs it
	@# The console's browser tests need Chromium: installed with apt-get where missing (as root).
	tools/install_browser.sh
	@# One worker per core: the suite's servers all listen on free ports.
	$(BIN)/python -m pytest -n auto

run: $(STAMP)  ## the whole Factory on this machine (options: ARGS="--port 3001 ...")
	$(BIN)/aifactory-local serve $(ARGS)

demo: $(STAMP)  ## one job end to end with sample data and a callback receiver
	$(BIN)/aifactory-local demo $(ARGS)

docs: $(STAMP)  ## serve the documentation site on http://127.0.0.1:8000, rebuilt as it changes
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy trainers
	@# Every function's entry point is named app.py: check them one at a time.
	@for f in functions/*/app.py; do $(BIN)/mypy --no-error-summary $$f || exit 1; done

validate: $(STAMP) $(SAM_STAMP) $(TOOLS_STAMP)  ## cfn-lint, sam validate and checkov of template.yaml
	$(SAM)/bin/cfn-lint template.yaml
	$(SAM)/bin/sam validate --region us-east-1
	@# checkov reads the template as CloudFormation receives it, after the SAM transform;
	@# offline (no policy download, no guideline mapping). Suppressions carry their reasons.
	$(SAM)/bin/python -m tests.template.cfn .aws-sam/checkov/template.json
	BC_SKIP_MAPPING=TRUE $(TOOLS)/bin/checkov --file .aws-sam/checkov/template.json \
		--framework cloudformation --skip-download --compact --quiet

# Known vulnerabilities in the pinned requirements; exits 2 (never "clean") when the
# vulnerability database could not be reached.
audit: $(TOOLS_STAMP)  ## known vulnerabilities in the pinned requirements
	$(TOOLS)/bin/python tools/audit.py layers/common/requirements.txt requirements-dev.txt

# sam build leaves no bytecode in its artifacts (it skips __pycache__ and unpacks wheels without
# compiling them), so every cold start would compile boto3, botocore, Powertools and the layer
# from source: about 1 s of CPU time per cold start. `bytecode` compiles the built artifacts
# once; unchecked-hash bytecode is used without comparing timestamps with the source, which a
# deployment package does not keep. Python 3.13 bytecode is the same on arm64 and x86_64.
BUILD_DIR ?= .aws-sam/build
build: $(STAMP) $(SAM_STAMP)  ## sam build, then its artifacts compiled to bytecode
	$(SAM)/bin/sam build
	@$(MAKE) --no-print-directory bytecode

bytecode: $(STAMP)  ## compile a sam build's artifacts to bytecode
	@test -d "$(BUILD_DIR)" || { echo "no build in $(BUILD_DIR): run sam build first"; exit 2; }
	$(BIN)/python -m compileall -q -j 0 --invalidation-mode unchecked-hash "$(BUILD_DIR)"

# schemathesis against the local Factory, long: 300 examples per operation and phase (or
# EXAMPLES=N, SEED=N). `make test` runs the same test with 8.
schemathesis: $(STAMP)  ## schemathesis against the local Factory (EXAMPLES=N, SEED=N)
	AIFACTORY_SCHEMATHESIS_EXAMPLES=$(or $(EXAMPLES),300) AIFACTORY_SCHEMATHESIS_SEED=$(or $(SEED),1) \
		$(BIN)/python -m pytest tests/local/test_schemathesis.py -n 0 -q

# Every benchmark; each prints its figures and, per measure, the goal and PASS or FAIL.
bench: $(STAMP)  ## every benchmark, each printing its figures
	$(BIN)/python benchmarks/staging_throughput.py
	$(BIN)/python benchmarks/staging_memory.py
	$(BIN)/python benchmarks/cold_import.py
	$(BIN)/python benchmarks/list_scaling.py
	$(BIN)/python benchmarks/report_extraction.py
	$(BIN)/python benchmarks/training_queue.py
	$(BIN)/python benchmarks/status_polling.py
	$(BIN)/python benchmarks/tenant_timing.py

# Build and deploy one environment of samconfig.toml (dev or prod): `make deploy ENV=prod`.
# Needs AWS credentials for the target account; prod shows the change set and asks first.
ENV ?= dev
deploy: $(STAMP) $(SAM_STAMP)  ## sam build and sam deploy of ENV=dev or ENV=prod
	@case "$(ENV)" in dev|prod) ;; *) echo "ENV must be dev or prod, not '$(ENV)'"; exit 2;; esac
	$(SAM)/bin/sam build --config-env $(ENV)
	@$(MAKE) --no-print-directory bytecode
	$(SAM)/bin/sam deploy --config-env $(ENV)

# Mutation testing of the shared layer (not in CI), in its own environment: the development
# pins plus mutmut (which needs a newer click than the development pins carry).
# `make mutate MODULE=callbacks` mutates one module; results are kept in .mutation/ between runs.
MUTATE_VENV := .venv-mutmut
$(MUTATE_VENV)/.installed: requirements-dev.txt requirements-mutate.txt layers/common/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(MUTATE_VENV)
	$(MUTATE_VENV)/bin/python -m pip install --quiet --upgrade pip
	grep -vE '^click==' requirements-dev.txt > $(MUTATE_VENV)/requirements-dev.txt
	$(MUTATE_VENV)/bin/python -m pip install --quiet -r $(MUTATE_VENV)/requirements-dev.txt \
		-r layers/common/requirements.txt -r requirements-mutate.txt
	$(MUTATE_VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

# `make mutate MODULE=store SAMPLE=60` runs a random sample of the module's mutants (SEED=0 by
# default) and prints its score with a 95% interval, an estimate of the whole module's.
mutate: $(MUTATE_VENV)/.installed  ## mutation testing of the shared layer (MODULE=..., SAMPLE=N)
	@$(if $(SAMPLE),$(if $(MODULE),,$(error SAMPLE needs a MODULE, e.g. make mutate MODULE=store SAMPLE=60)))
	@mkdir -p .mutation
	@for f in tests functions events local admin template.yaml pyproject.toml; do ln -sfn ../$$f .mutation/$$f; done
	@ln -sfn ../layers/common/aifactory .mutation/aifactory
	$(if $(SAMPLE),$(MUTATE_VENV)/bin/python benchmarks/mutation_sample.py $(MODULE) $(SAMPLE) $(or $(SEED),0) >.mutation/sample.txt)
	@# The property tests run 50 examples per mutant instead of 1,000.
	cd .mutation && AIFACTORY_FUZZ_EXAMPLES=50 ../$(MUTATE_VENV)/bin/mutmut run \
		$(if $(SAMPLE),$$(cat sample.txt),$(if $(MODULE),"aifactory.$(MODULE).*")) >mutmut.log 2>&1 \
		|| { tail -40 mutmut.log; exit 1; }
	$(MUTATE_VENV)/bin/python benchmarks/mutation_score.py .mutation/mutants $(MODULE) $(if $(SAMPLE),.mutation/sample.txt)

clean:  ## remove the environments and build outputs
	rm -rf $(VENV) $(TOOLS) $(SAM) $(MUTATE_VENV) .aws-sam .pytest_cache .mutation

# A chaos run of the local Factory: SIGKILLs at random moments, then the invariants checked.
SEED ?= 1
JOBS ?= 6
KILLS ?= 2
chaos: $(STAMP)  ## a chaos run of the local Factory (SEED=, JOBS=, KILLS=)
	$(BIN)/python -m aifactory_local.chaos --seed $(SEED) --jobs $(JOBS) --kills $(KILLS)
