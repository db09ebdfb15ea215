# Toru developer entry points. `make run` and `make test` are the README's two commands.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOME_DIR ?= .toru-home
PLUGINS_OUT ?= build/plugins

.PHONY: run test deps venv plugins lint format bench clean

$(BIN)/toru: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $(BIN)/toru

venv: $(BIN)/toru

## Build every example plugin into $(PLUGINS_OUT)/*.binary
plugins: venv
	$(BIN)/python examples/build.py --out $(PLUGINS_OUT)

## Run Toru with the example plugins from a fresh home on 127.0.0.1:8080
run: plugins
	bash scripts/run-demo $(HOME_DIR) $(PLUGINS_OUT)

## Install everything the suite needs (Debian packages, venv), then run it all
test:
	bash scripts/test

deps:
	bash scripts/install-system-deps

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: plugins
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf build $(HOME_DIR) test-output .pytest_cache
