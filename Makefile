# Tutti — every command a developer, CI or a platform team needs. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

PROTOS  := $(shell find proto -name '*.proto')
# buf (contracts) comes from the npm registry into .tutti/tools (git-ignored), pinned.
BUF_VERSION := 1.75.0
BUF         := .tutti/tools/node_modules/.bin/buf
BUF_STAMP   := .tutti/tools/buf-$(BUF_VERSION).stamp
# Connection settings of the servers infra/infra.sh manages (or the external ones the user set),
# so every Python step talks to the same Kafka, Redis and PostgreSQL.
WITH_INFRA := eval "$$(infra/infra.sh env)" &&
SCENARIO ?= black_friday
USERS    ?= 50
DURATION ?= 60s

.PHONY: help
help: ## List the commands
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- setup ---------------------------------------------------------------------------------
# Three levels, each the one before plus more (README, "Prerequisites and tested systems"):
#   install-run   what running needs: the virtualenv from requirements.lock (exact versions,
#                 hash-checked), the generated protobuf code, Redis/PostgreSQL/Java/Kafka jars
#   install-test  + requirements-dev.lock (pytest, ruff, hadolint, locust...), grpcurl (stack
#                 tests), ghz (bench smoke test), buf (contracts)
#   install       everything a developer needs (today: install-test)

# Python 3.11 (pyproject's requires-python): python3.11 when there is one, else python3.
ifndef PYTHON
PYTHON := $(shell command -v python3.11 || command -v python3)
endif

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
	  { echo "error: Tutti needs Python 3.11; $(PYTHON) is $$($(PYTHON) --version 2>&1). Install python3.11 or run make PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# The project itself: --no-deps (the lock brought them), --no-build-isolation (its build
# backend, hatchling, is in the lock too: nothing unpinned is downloaded).
$(VENV)/.run-stamp: requirements.lock pyproject.toml | $(VENV)/bin/python
	@$(PYTHON) -m tools.lock check
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

$(VENV)/.dev-stamp: requirements-dev.lock $(VENV)/.run-stamp
	@$(PYTHON) -m tools.lock check
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements-dev.lock
	@touch $@

gen/.stamp: $(VENV)/.run-stamp $(PROTOS)
	$(PY) -m tools.gen_protos
	@touch $@

# grpcurl, a real gRPC client that works through server reflection (used by the stack tests).
GRPCURL := .tutti/bin/grpcurl

$(GRPCURL):
	GOBIN=$(CURDIR)/.tutti/bin go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3

# ghz, the gRPC load tool of `make bench` (its smoke test runs in `make test`).
GHZ := .tutti/bin/ghz

$(GHZ):
	GOBIN=$(CURDIR)/.tutti/bin go install github.com/bojand/ghz/cmd/ghz@v0.93.0

# The console's front-end libraries (htmx, its SSE extension, Chart.js; axe-core for the browser
# tests), exactly as console/package-lock.json pins them, from the npm registry. Running needs
# them: the console serves them to browsers.
CONSOLE_ASSETS := console/node_modules/.stamp

$(CONSOLE_ASSETS): console/package.json console/package-lock.json
	npm ci --prefix console --no-audit --no-fund --loglevel=error
	@touch $@

# The browser the console's tests drive: Debian's chromium (Playwright downloads nothing).
CHROMIUM ?= /usr/bin/chromium

.PHONY: browser
browser: ## Install Debian's chromium for the console's browser tests (when missing)
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] || \
	  { echo "chromium missing: apt-get install chromium (as root)"; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

.PHONY: ghz
ghz: $(GHZ) ## Install ghz (the load tool of make bench) into .tutti/bin

.PHONY: install-run
install-run: $(VENV)/.run-stamp gen/.stamp $(CONSOLE_ASSETS) ## Install what running needs: virtualenv from requirements.lock, generated code, the console's assets, Redis, PostgreSQL, Java, Kafka jars
	infra/install.sh

# What the tests need on top of running, Debian's chromium for the console's browser tests included.
.PHONY: install-test
install-test: install-run $(VENV)/.dev-stamp $(GRPCURL) $(GHZ) $(BUF_STAMP) browser ## install-run + requirements-dev.lock (pytest, ruff, Playwright, hadolint...), grpcurl, ghz, buf, chromium
	@true

.PHONY: install
install: install-test ## Install everything a developer needs (today the same as install-test)

# Refresh the locks from pyproject.toml with uv (pinned here; installed into the virtualenv on
# first use). Existing pins are kept where they still fit; UPGRADE=1 takes the newest allowed.
UV_VERSION := 0.13.9
UV         := $(VENV)/bin/uv

.PHONY: lock
lock: | $(VENV)/bin/python ## Refresh requirements.lock and requirements-dev.lock from pyproject.toml with uv (UPGRADE=1: newest versions)
	@test "$$($(UV) --version 2>/dev/null)" = "uv $(UV_VERSION)" || $(PY) -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	$(PY) -m tools.lock compile $(UV) $(if $(UPGRADE),--upgrade)

# Stale locks are named before pip fails on a hash (tools/lock.py check: offline, stdlib only);
# the install steps run the same check.
.PHONY: lock-check
lock-check: ## Check that requirements.lock and requirements-dev.lock match pyproject.toml (offline)
	@$(PYTHON) -m tools.lock check

.PHONY: proto
proto: gen/.stamp ## Regenerate Python code and typed stubs from proto/

# --- infrastructure ------------------------------------------------------------------------

.PHONY: infra-up
infra-up: install-run ## Start Kafka (KRaft), Redis and PostgreSQL on loopback, create topics, apply migrations
	infra/infra.sh up
	$(WITH_INFRA) $(PY) -m tools.prepare

.PHONY: infra-down
infra-down: ## Stop the infrastructure started by infra-up (data kept under .tutti/)
	infra/infra.sh down

.PHONY: infra-status
infra-status: ## Show which infrastructure servers run
	infra/infra.sh status

# --- the stack -----------------------------------------------------------------------------

.PHONY: run
run: infra-up ## Install what running needs (install-run), start infrastructure and every service with demo data in the foreground (Ctrl-C stops)
	$(WITH_INFRA) $(PY) -m tools.stack run

.PHONY: up
up: infra-up ## Same as run, in the background
	$(WITH_INFRA) $(PY) -m tools.stack up

.PHONY: down
down: ## Stop the services and the infrastructure; leaves no process behind
	-$(PY) -m tools.stack down
	infra/infra.sh down

.PHONY: status
status: ## Show infrastructure and services, with their health
	infra/infra.sh status
	$(WITH_INFRA) $(PY) -m tools.stack status

# --- performance ---------------------------------------------------------------------------

.PHONY: bench
bench: infra-up $(VENV)/.dev-stamp $(GHZ) ## Measure Tutti against bare grpc.aio/Redis baselines (~5 min); writes docs/benchmarks.md
	$(WITH_INFRA) $(PY) -m bench $(BENCH_ARGS)

.PHONY: loadtest
loadtest: infra-up $(VENV)/.dev-stamp ## Locust headless on a private stack (LOADTEST_ARGS=--host=… for a running one): SCENARIO= USERS= DURATION=
	$(WITH_INFRA) $(PY) -m loadtests --scenario $(SCENARIO) --users $(USERS) --duration $(DURATION) $(LOADTEST_ARGS)

# --- contracts -----------------------------------------------------------------------------
$(BUF_STAMP):
	npm install --prefix .tutti/tools --no-save --no-audit --no-fund --loglevel=error @bufbuild/buf@$(BUF_VERSION)
	@touch $@

.PHONY: proto-lint
proto-lint: $(BUF_STAMP) ## Lint proto/ with buf (STANDARD + COMMENTS; see buf.yaml)
	$(BUF) lint

# The contracts as last released, as a buf image: every change is checked against it, on any
# branch and in a clean clone alike. A deliberate break (a new major version) is recorded with
# `make proto-release` in the same commit, where a reviewer sees it.
PROTO_RELEASED := proto/released.binpb

.PHONY: proto-breaking
proto-breaking: $(BUF_STAMP) ## Check proto/ for breaking changes against the released contracts (proto/released.binpb)
	$(BUF) breaking --against $(PROTO_RELEASED)

.PHONY: proto-release
proto-release: $(BUF_STAMP) ## Record the current contracts as released (the baseline of proto-breaking)
	$(BUF) build --exclude-source-info -o $(PROTO_RELEASED)

.PHONY: docs-api
docs-api: gen/.stamp ## Regenerate docs/api.md (the API reference) from the proto comments
	$(PY) -m tools.gen_api_docs

# --- quality -------------------------------------------------------------------------------

.PHONY: test
test: install-test contracts infra-up ## Run the whole suite: contracts, unit, integration on real servers, end-to-end in a browser; starts the infrastructure
	$(WITH_INFRA) $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

.PHONY: contracts
contracts: proto-lint proto-breaking gen/.stamp ## buf lint, breaking changes against the released contracts, API reference up to date
	$(PY) -m tools.gen_api_docs --check

.PHONY: test-unit
test-unit: $(VENV)/.dev-stamp gen/.stamp ## Run the fast unit tests only (no servers)
	$(PY) -m pytest -q -m "not integration and not e2e"

.PHONY: lint
lint: $(VENV)/.dev-stamp ## ruff on the Python code
	$(PY) -m ruff check .

.PHONY: clean
clean: ## Remove generated code and caches (keeps .tutti/ data; `make down` first to stop servers)
	rm -rf gen .pytest_cache .mypy_cache .ruff_cache .hypothesis
