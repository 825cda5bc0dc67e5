# Two commands: `make demo` and `make test`. Both create .venv and install auxcord first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The first interpreter that actually runs and is 3.11+ (pyenv shims may exist but fail).
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: help demo test lint typecheck pytest check-java check-python stack-up stack-down clean

help:
	@echo "make demo   run the whole pipeline on a simulated friend group and serve the dashboard"
	@echo "make test   lint, type-check and run the test suite against real local servers"

check-python:
	@[ -n "$(PYTHON)" ] || { echo "Python 3.11+ is required and none was found on PATH."; \
	  echo "  Install python3.11 (or newer), or run: make PYTHON=/path/to/python3.11 test"; exit 1; }

check-java:
	@command -v java >/dev/null 2>&1 || { \
	  echo "Java 17+ is required: Spark runs on the JVM."; \
	  echo "  Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless"; \
	  echo "  macOS:         brew install openjdk@17"; \
	  echo "  Fedora:        sudo dnf install -y java-17-openjdk-headless"; exit 1; }
	@java -version 2>&1 | awk -F'"' '/version/ { split($$2, v, "."); if (v[1] + 0 < 17) { \
	  print "Java " $$2 " found, but Spark 4 needs Java 17 or newer."; exit 1 } }'

$(STAMP): pyproject.toml | check-python
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[local,dev]'
	@touch $(STAMP)

demo: check-java $(STAMP)
	$(BIN)/auxcord demo

test: check-java $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

BROWSER_WARNING := echo; echo "!!! BROWSER TESTS SKIPPED: Chromium is not installed, so the dashboard's end-to-end"; \
	echo "!!! tests did not run. Install it and run again:  sudo apt-get install -y chromium"; echo

pytest: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { $(BROWSER_WARNING); }
	$(BIN)/pytest
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { $(BROWSER_WARNING); }

stack-up: $(STAMP)
	$(BIN)/auxcord stack up

stack-down: $(STAMP)
	$(BIN)/auxcord stack down

clean: stack-down
	rm -rf .auxcord .mypy_cache .ruff_cache .pytest_cache
