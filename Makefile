# Every entry point builds the stubs first; the virtual environment is made on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
STUBS := coupons/.stubs-built
PROTOS := $(shell find protos -name '*.proto')

.PHONY: all install stubs console console-check console-types chromium run lint test bench clean

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

# The web console (console/, docs/console.md): npm ci from the committed package-lock.json, then a Vite build
# into console/dist, redone only when a source changed.
CONSOLE_MODULES := console/node_modules/.package-lock.json
CONSOLE_BUILT := console/dist/index.html
CONSOLE_SOURCES := $(shell find console/src -type f 2>/dev/null) console/index.html console/vite.config.ts \
	console/tsconfig.json

$(CONSOLE_MODULES): console/package.json console/package-lock.json
	cd console && npm ci --no-audit --no-fund --loglevel=error
	touch $@

console: $(CONSOLE_BUILT)

$(CONSOLE_BUILT): $(CONSOLE_MODULES) $(CONSOLE_SOURCES)
	cd console && npm run --silent build -- --logLevel warn
	touch $@

# The console's type check (vue-tsc) and unit tests (vitest); `make test` runs them.
console-check: $(CONSOLE_MODULES)
	cd console && npm run --silent typecheck && npm test --silent

# Regenerates console/src/api/schema.d.ts from a running gateway's /openapi.json (after a contract change;
# tests/test_console_browser.py fails while the committed file differs from the suite's document).
GATEWAY_URL ?= http://127.0.0.1:8080
console-types: $(CONSOLE_MODULES)
	cd console && npx openapi-typescript $(GATEWAY_URL)/openapi.json -o src/api/schema.d.ts

# Debian's Chromium for the browser tests, installed when missing (as root, else with sudo -n); the tests'
# fixture (tests/debian.py) installs it too when they run alone.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }

run: stubs console
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

test: lint console console-check chromium
	$(PY) -m pytest $(PYTEST_ARGS)

bench: stubs
	$(PY) -m bench

clean:
	rm -rf $(VENV) .run console/node_modules console/dist
	find coupons -mindepth 1 ! -name __init__.py -delete
