# handoff — the two commands that matter: `make dev` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help setup dev test lint unit infra up down bench clean

# The local broker's and database's addresses, unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL
# already name others (one shell line: the recipe's next commands must see them).
LOCAL_INFRA_ENV := if [ -z "$${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then \
	  lines="$$(deploy/local/kafka.sh env)"; eval "$$lines"; fi; \
	if [ -z "$${DATABASE_URL:-}" ]; then \
	  lines="$$(deploy/local/postgres.sh env)"; eval "$$lines"; fi

help:
	@echo "make dev    set up and run every service in one process (http://127.0.0.1:8000/docs)"
	@echo "make test   set up and run the whole suite, real Kafka and PostgreSQL included"
	@echo "make up     run the five services as separate processes on Kafka + PostgreSQL"
	@echo "make down   stop what 'make up' started"
	@echo "make bench  benchmarks (bench/), side by side with their baselines"

$(STAMP): pyproject.toml
	@deploy/local/venv.sh $(PYTHON) $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

dev: setup
	$(BIN)/handoff dev

lint: setup
	$(BIN)/ruff check shared services tests bench
	$(BIN)/ruff format --check shared services tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Real Kafka (from Maven Central) and PostgreSQL (from Debian) as plain processes, unless
# KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL already point at running ones.
infra:
	@if [ -z "$${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then deploy/local/kafka.sh start >/dev/null; fi
	@if [ -z "$${DATABASE_URL:-}" ]; then deploy/local/postgres.sh start >/dev/null; fi

test: setup lint infra
	$(LOCAL_INFRA_ENV); \
	$(BIN)/pytest -p no:cacheprovider --durations=10

unit: setup
	HANDOFF_SKIP_INTEGRATION=1 $(BIN)/pytest -q -m "not integration"

up: setup
	deploy/local/up.sh

down:
	deploy/local/down.sh

bench: setup infra
	$(LOCAL_INFRA_ENV); \
	PYTHONPATH=. $(BIN)/python bench/bus.py; \
	PYTHONPATH=. $(BIN)/python bench/intake.py; \
	PYTHONPATH=. $(BIN)/python bench/qualification.py

clean:
	rm -rf .handoff .pytest_cache .mypy_cache .ruff_cache
