# Everyday targets. `make run` starts the local stack; `make test` runs the whole suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 7860
SD_DATA_DIR ?= ./local-data
export HF_HUB_OFFLINE := 1
export PYTHONPATH := $(CURDIR)/layers/sdcore:$(CURDIR)/local:$(CURDIR)/functions/proxy:$(CURDIR)/functions/admin:$(CURDIR)/functions/control:$(CURDIR)/functions/inference

.PHONY: install run test lint format validate-template build clean bench docs

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

install: $(BIN)/.installed

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
	rm -rf $(VENV) .venv-sam .pytest_cache .ruff_cache site

bench: install
	$(BIN)/python -m benchmarks.sync_latency
