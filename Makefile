# AI Factory. `make test` and `make run` build the virtual environment themselves.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.13 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# sam build looks for python3.13 on PATH; the venv provides it.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv test run demo lint typecheck validate build bench clean

venv: $(STAMP)

$(STAMP): requirements-dev.txt layers/common/requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 13) else "Python 3.13 is needed (pyenv install 3.13.0)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -r layers/common/requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

test: $(STAMP)
	@# One worker per core: the suite's servers all listen on free ports.
	$(BIN)/python -m pytest -n auto

run: $(STAMP)
	$(BIN)/aifactory-local serve

demo: $(STAMP)
	$(BIN)/aifactory-local demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy trainers
	@# Every function's entry point is named app.py: check them one at a time.
	@for f in functions/*/app.py; do $(BIN)/mypy --no-error-summary $$f || exit 1; done

validate: $(STAMP)
	$(BIN)/cfn-lint template.yaml
	$(BIN)/sam validate --region us-east-1

build: $(STAMP)
	$(BIN)/sam build

bench: $(STAMP)
	$(BIN)/python benchmarks/staging_throughput.py
	$(BIN)/python benchmarks/staging_memory.py

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache
