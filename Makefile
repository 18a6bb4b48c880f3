# Tutti — every command a developer, CI or a platform team needs. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

PROTOS  := $(shell find proto -name '*.proto')
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

$(VENV)/.stamp: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

gen/.stamp: $(VENV)/.stamp $(PROTOS)
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
# tests), exactly as console/package-lock.json pins them, from the npm registry.
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

.PHONY: install
install: $(VENV)/.stamp gen/.stamp $(CONSOLE_ASSETS) $(GRPCURL) $(GHZ) ## Install everything missing: virtualenv, Python deps, console assets, Debian packages, Kafka jars, grpcurl, ghz
	infra/install.sh

.PHONY: proto
proto: gen/.stamp ## Regenerate Python code and typed stubs from proto/

# --- infrastructure ------------------------------------------------------------------------

.PHONY: infra-up
infra-up: install ## Start Kafka (KRaft), Redis and PostgreSQL on loopback, create topics, apply migrations
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
run: infra-up ## Install, start infrastructure and every service with demo data in the foreground (Ctrl-C stops)
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
bench: infra-up $(GHZ) ## Measure Tutti against bare grpc.aio/Redis baselines (~5 min); writes docs/benchmarks.md
	$(WITH_INFRA) $(PY) -m bench $(BENCH_ARGS)

.PHONY: loadtest
loadtest: infra-up ## Locust headless on a private stack (LOADTEST_ARGS=--host=… for a running one): SCENARIO= USERS= DURATION=
	$(WITH_INFRA) $(PY) -m loadtests --scenario $(SCENARIO) --users $(USERS) --duration $(DURATION) $(LOADTEST_ARGS)

# --- contracts -----------------------------------------------------------------------------
# buf comes from the npm registry into .tutti/tools (git-ignored), pinned.
BUF_VERSION := 1.75.0
BUF         := .tutti/tools/node_modules/.bin/buf

.tutti/tools/buf-$(BUF_VERSION).stamp:
	npm install --prefix .tutti/tools --no-save --no-audit --no-fund --loglevel=error @bufbuild/buf@$(BUF_VERSION)
	@touch $@

.PHONY: proto-lint
proto-lint: .tutti/tools/buf-$(BUF_VERSION).stamp ## Lint proto/ with buf (STANDARD + COMMENTS; see buf.yaml)
	$(BUF) lint

# The contracts as last released, as a buf image: every change is checked against it, on any
# branch and in a clean clone alike. A deliberate break (a new major version) is recorded with
# `make proto-release` in the same commit, where a reviewer sees it.
PROTO_RELEASED := proto/released.binpb

.PHONY: proto-breaking
proto-breaking: .tutti/tools/buf-$(BUF_VERSION).stamp ## Check proto/ for breaking changes against the released contracts (proto/released.binpb)
	$(BUF) breaking --against $(PROTO_RELEASED)

.PHONY: proto-release
proto-release: .tutti/tools/buf-$(BUF_VERSION).stamp ## Record the current contracts as released (the baseline of proto-breaking)
	$(BUF) build --exclude-source-info -o $(PROTO_RELEASED)

.PHONY: docs-api
docs-api: gen/.stamp ## Regenerate docs/api.md (the API reference) from the proto comments
	$(PY) -m tools.gen_api_docs

# --- quality -------------------------------------------------------------------------------

.PHONY: test
test: contracts infra-up browser ## Run the whole suite: contracts, unit, integration on real servers, end-to-end; starts the infrastructure
	$(WITH_INFRA) $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

.PHONY: contracts
contracts: proto-lint proto-breaking gen/.stamp ## buf lint, breaking changes against the released contracts, API reference up to date
	$(PY) -m tools.gen_api_docs --check

.PHONY: test-unit
test-unit: install ## Run the fast unit tests only (no servers)
	$(PY) -m pytest -q -m "not integration and not e2e"

.PHONY: lint
lint: install ## ruff on the Python code
	$(PY) -m ruff check .

.PHONY: clean
clean: ## Remove generated code and caches (keeps .tutti/ data; `make down` first to stop servers)
	rm -rf gen .pytest_cache .mypy_cache .ruff_cache .hypothesis
