# Local developer entry points. GNU make; every recipe works from a fresh clone.
#
#   make run    start the broker, MongoDB-compatible server and every process
#   make test   run the test suite against real local servers
#   make lint   ruff + mypy + the contracts' compatibility check + generated files current
#   make bench  every benchmark beside its raw baseline -> docs/benchmarks.md, docs/img/
#   make chaos  the saga under load while processes are killed, 20 seeded rounds -> docs/chaos.md
#   make clean  remove var/ and both virtual environments

SHELL := /bin/bash

# The first python3.x on PATH that is >= 3.11 (override with `make PYTHON=...`).
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	command -v $$p >/dev/null 2>&1 && \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && \
	{ echo $$p; break; }; done)

VENV := .venv
VENV_STAMP := $(VENV)/.installed
SECANTUS_VENV := .venv-secantus
PYTEST_ARGS ?=
# pytest-xdist workers (two fit 2 cores; each starts its own broker and MongoDB-wire
# server); `make test TEST_WORKERS=0` runs the tests in one process.
TEST_WORKERS ?= 2
BENCH_ARGS ?=
CHAOS_ARGS ?=

.PHONY: venv .venv secantus compose-tool prometheus-tool run test lint bench chaos clean

venv .venv: $(VENV_STAMP)

# Re-installs whenever pyproject.toml changes.
$(VENV_STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then echo "error: Python >= 3.11 not found (set PYTHON=...)" >&2; exit 1; fi
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	@touch $@

# SecantusDB (GPL-2.0) lives in its own venv and only ever runs as a separate process;
# devstack.servers holds the pinned version.
secantus: $(VENV_STAMP)
	$(VENV)/bin/python -m devstack secantus

# Debian's docker-compose, for the compose-file test only. Best effort: never fails.
compose-tool:
	@command -v docker-compose >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing docker-compose (Debian package) for the compose test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null) \
	      || echo "note: could not install docker-compose; its test will skip (or fail under CI)"; \
	  else \
	    echo "note: docker-compose not installed; its test will skip (or fail under CI)"; \
	  fi; }

# Debian's prometheus (with promtool), for the Prometheus files' test and `make run`'s
# Prometheus. Best effort: never fails.
prometheus-tool:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing prometheus (Debian package) for promtool"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) \
	      || echo "note: could not install prometheus; the promtool checks will skip (or fail under CI)"; \
	  else \
	    echo "note: promtool not installed; its checks will skip (or fail under CI)"; \
	  fi; }

run: $(VENV_STAMP) secantus
	$(VENV)/bin/cqrs run

test: $(VENV_STAMP) secantus compose-tool prometheus-tool
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/cqrs contracts check
	$(VENV)/bin/cqrs generate --check

# `make bench BENCH_ARGS='relay --quick'` runs one scenario; `python -m bench --list` names them.
bench: $(VENV_STAMP) secantus
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

# `make chaos CHAOS_ARGS='--rounds 2 --kill api,relay'` (`--help` lists the options): the
# reference saga's chaos rounds, in bench/; a project without the saga has none.
chaos: $(VENV_STAMP) secantus
	@[ -d bench/$@ ] || { echo "no chaos rounds in this project (they are the reference saga's)"; exit 2; }
	$(VENV)/bin/python -m bench.$@ $(CHAOS_ARGS)

clean:
	rm -rf var $(VENV) $(SECANTUS_VENV)
