# Everyday targets. `make run` starts the local stack; `make test` runs the whole suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 7860
SD_DATA_DIR ?= ./local-data
export HF_HUB_OFFLINE := 1
export PYTHONPATH := $(CURDIR)/layers/sdcore:$(CURDIR)/local:$(CURDIR)/functions/proxy:$(CURDIR)/functions/admin:$(CURDIR)/functions/control:$(CURDIR)/functions/inference

.PHONY: install browser run test lint format validate-template build clean bench docs

$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip install -q --no-deps mediapipe==1.2.3
	$(BIN)/python -m sdcore.engine.face_detector_model
	$(BIN)/python -m sdcore.engine.segmenter_model
	$(BIN)/python -m sdcore.adapters.zh.cedict
	$(BIN)/python tests/data/fetch_photos.py
	touch $@

# the web app (web/): npm ci when the lock changes, the build when a source does
WEB_SOURCES := $(shell find web/src -type f 2>/dev/null) web/build.mjs web/tsconfig.json
web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_SOURCES)
	cd web && npm run --silent build

# Debian's chromium for the browser tests, through apt where that needs no password (.ci/run
# runs it beside the install instead: BROWSER_INSTALL=true)
BROWSER_INSTALL ?= bash scripts/install-browser.sh
browser:
	$(BROWSER_INSTALL)

install: browser $(BIN)/.installed web/dist/index.html

run: install
	SD_DATA_DIR=$(SD_DATA_DIR) PORT=$(PORT) $(BIN)/python -m sdlocal.stack

# The static checks (mostly one core) run beside the tests (two workers), so CI waits for the
# longer of the two; their output is shown after the tests', and either failing fails the target.
PYTEST_ARGS ?=
test: install
	$(BIN)/ruff check .
	checks=$$(mktemp); \
	( $(BIN)/mypy layers/sdcore/sdcore local/sdlocal && $(BIN)/lint-imports \
	  && $(BIN)/mkdocs build --strict --quiet --site-dir $$(mktemp -d) ) > $$checks 2>&1 & \
	pid=$$!; \
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS); tests=$$?; \
	wait $$pid; static=$$?; cat $$checks; rm -f $$checks; \
	echo "tests: exit $$tests; mypy, lint-imports, mkdocs: exit $$static"; \
	test $$tests -eq 0 -a $$static -eq 0

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

validate-template: install
	bash scripts/validate-template.sh

# what `sam build` would deploy (the layer and the zip functions), in .aws-sam/build
build: install
	$(BIN)/python scripts/build_artifacts.py

docs: install
	$(BIN)/mkdocs serve --strict

clean:
	rm -rf $(VENV) .venv-sam .pytest_cache .ruff_cache site web/node_modules web/dist

bench: install
	$(BIN)/python -m benchmarks.sync_latency
