PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean deploy-config

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gateway demo

test: $(STAMP)
	scripts/install-test-deps.sh
	$(BIN)/pytest -q

# not part of `make test`: installs wrk + nginx (Debian), ~10 minutes, writes bench/results.json
bench: $(STAMP)
	bench/install-deps.sh
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check gateway tests examples deploy
	$(BIN)/mypy
	$(BIN)/mypy --strict examples/backup_notebooks.py deploy/render_routes.py

# deploy/k8s/config/routes.yaml = routes.yaml + deploy/routes.production.yaml (served by the image,
# docker compose and the Kubernetes ConfigMap); tests/test_deploy.py fails while it is stale
deploy-config: $(STAMP)
	$(BIN)/python deploy/render_routes.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
