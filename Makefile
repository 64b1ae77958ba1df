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

# Lint, import order and format (ruff); `make test` runs it first.
lint: stubs
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: stubs
	$(PY) -m bench

clean:
	rm -rf $(VENV) .run
	find coupons -mindepth 1 ! -name __init__.py -delete
