# woolly_grpc — every task a developer or CI runs. `make help` lists them.
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
BUF    := node_modules/.bin/buf
GEN    := woolly_grpc/_gen
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install proto format lint typecheck test serve bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv with the package and dev tools, npm tools, redis-server
$(STAMP): pyproject.toml package.json scripts/install_system_deps.sh
	bash scripts/install_system_deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	npm install --no-audit --no-fund --silent
	touch $@

proto: $(STAMP) ## Regenerate woolly_grpc/_gen from protos/ (commit the result)
	PATH="$(BIN):$$PATH" bash scripts/gen_protos.sh

format: $(STAMP) ## Format and autofix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lint: $(STAMP) ## ruff, mypy, buf lint, stubs fresh, hadolint, k8s manifests, alert rules
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BUF) lint
	PATH="$(BIN):$$PATH" bash scripts/gen_protos.sh --check
	$(BIN)/hadolint Dockerfile
	$(BIN)/kubernetes-validate --strict --quiet deploy/k8s/*.yaml
	promtool check rules deploy/prometheus/*.yaml

typecheck: $(STAMP) ## mypy only
	$(BIN)/mypy

test: lint ## Lint, then run the whole test suite, then the Redis tests again on a Redis Cluster
	GRPC_VERBOSITY=ERROR $(BIN)/pytest
	WOOLLY_TEST_REDIS=cluster GRPC_VERBOSITY=ERROR $(BIN)/pytest tests/store tests/cache tests/runs

serve: $(STAMP) ## Run the server on the bundled example repositories
	WOOLLY_REPOS_ROOT=$${WOOLLY_REPOS_ROOT:-examples/repos} $(BIN)/woolly-grpc serve

bench: $(STAMP) ## Run the benchmark suite (~4 min) and append its report to docs/performance.md
	$(PY) -m bench.suite --write

clean: ## Remove the venv and caches
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
