# convq: `make run` starts the stack, `make test` runs the suite; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run demo test compose-test bench lint clean

run: $(VENV)/.local  ## set up and start Redis, a worker and the API on http://$HOST:$PORT (127.0.0.1:8000)
	bin/run

demo: $(VENV)/.local  ## walk through the seed example against the running stack
	python scripts/demo.py

test: $(VENV)/.test  ## set up and run the whole test suite
	python -m pytest

compose-test: $(VENV)/.test  ## build the images and run the docker compose stack for real (sets up a Docker engine if missing)
	python -m pytest -m compose --timeout 1800 tests/compose

bench: $(VENV)/.test  ## measure convq against its baselines side by side (docs/PERFORMANCE.md)
	python -m bench

lint: $(VENV)/.test  ## format and lint the code
	ruff format .
	ruff check --fix .

clean:
	rm -rf $(VENV) .run .pytest_cache .hypothesis

$(VENV)/.local: requirements/shared.txt requirements/api.txt requirements/worker.txt requirements/local.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/local.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --editable .  # the convq command
	touch $@

$(VENV)/.test: $(VENV)/.local requirements/test.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/test.txt
	bin/install-chromium
	touch $@
