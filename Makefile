# Every entry point builds the stubs first; the virtual environment is made on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
STUBS := coupons/.stubs-built
PROTOS := $(shell find protos -name '*.proto')

.PHONY: all install stubs run lint test bench clean

LINTED := kernel services gateway cli suite bench tests tools

all: stubs

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[build,local,dev]'
	touch $@

stubs: $(STUBS)

$(STUBS): $(INSTALLED) $(PROTOS) tools/build_stubs.py
	$(PY) -m tools.build_stubs
	touch $@

run: stubs
	$(PY) -m suite

# buf reads googleapis' google/api protos (imports only, never linted) through a link into the wheel.
BUF_DEPS := $(VENV)/buf-deps/google/api

$(BUF_DEPS): | $(INSTALLED)
	mkdir -p $(@D)
	ln -sfn "$$($(PY) -c 'import google.api; print(google.api.__path__[0])')" $@

# Lint, import order and format (ruff), types (mypy: the paths and settings in pyproject.toml) and the
# protos (buf lint, buf.yaml); `make test` runs it first.
lint: stubs $(BUF_DEPS)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy
	$(VENV)/bin/buf lint

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: stubs
	$(PY) -m bench

clean:
	rm -rf $(VENV) .run
	find coupons -mindepth 1 ! -name __init__.py -delete
