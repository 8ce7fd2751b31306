# convq: `make run` starts the stack, `make test` runs the suite; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run demo test compose-test bench lint clean

run: $(VENV)/.local  ## set up and start Redis, a worker and the API on http://$HOST:$PORT (127.0.0.1:8000)
	bin/run

demo: $(VENV)/.local  ## walk through the seed example against the running stack (CONVQ_URL, or ARGS=--url URL)
	python scripts/demo.py $(ARGS)

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

# First run only: pip shows each package it fetches (torch alone is about 750 MB: minutes on a slow line).
$(VENV)/.local: requirements/shared.txt requirements/api.txt requirements/worker.txt requirements/client.txt requirements/local.txt
	@echo "convq: setting up $(VENV) (on the first run, and when requirements change): the API's, the worker's and make run's packages"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar on -r requirements/local.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --editable .  # the convq command
	@echo "convq: $(VENV) is ready"
	touch $@

$(VENV)/.test: $(VENV)/.local requirements/test.txt tests/generators/package.json tests/generators/package-lock.json
	@echo "convq: adding the test suite's packages to $(VENV) (on the first run, and when requirements change)"
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar on -r requirements/test.txt
	bin/install-node
	npm ci --prefix tests/generators --no-audit --no-fund  # openapi-typescript, exactly as package-lock.json pins it
	bin/install-chromium
	touch $@
