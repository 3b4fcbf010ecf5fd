PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test hostile lint bench clean deploy-config docs mutants

# Debian's python3 has no ensurepip (so no `-m venv`) until python3-venv is installed
$(STAMP): pyproject.toml
	@$(PY) -c 'import ensurepip, venv' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make: $(PY) has no ensurepip; installing python3-venv" >&2; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	  else \
	    echo "make: $(PY) cannot create a virtualenv (no ensurepip): install python3-venv" \
	      "(sudo apt-get install python3-venv) or run make PY=/path/to/python3.11" >&2; exit 1; \
	  fi; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/routegate demo

# -n auto: one xdist worker per core (tests are xdist-safe: free ports, tmp_path, no order dependence)
test: $(STAMP)
	scripts/install-test-deps.sh
	$(BIN)/pytest -q -n auto

# mutation testing (mutmut) of pagination, mapping, the cache policy and the pipeline (calls, pipeline), each group running only its
# focused tests, in throwaway copies under $TMPDIR/routegate-mutants; slow: MUTANTS=cache-policy runs one group
mutants: $(STAMP)
	$(BIN)/python scripts/mutants.py named
	$(BIN)/python scripts/mutants.py $(MUTANTS)

# the hostile-upstream and hostile-client suite alone (it is part of `make test` too)
hostile: $(STAMP)
	$(BIN)/pytest -q -m hostile

# not part of `make test`: installs wrk + nginx (Debian), ~10 minutes, writes bench/results.json
bench: $(STAMP)
	bench/install-deps.sh
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check gateway sandbox tests examples deploy bench
	$(BIN)/mypy
	$(BIN)/mypy --strict examples/backup_notebooks.py examples/notebook_backup deploy/render_routes.py
	$(BIN)/mypy --strict bench

# deploy/k8s/config/routes.yaml = routes.yaml + deploy/routes.production.yaml (served by the image,
# docker compose and the Kubernetes ConfigMap); tests/test_deploy.py fails while it is stale
deploy-config: $(STAMP)
	$(BIN)/python deploy/render_routes.py

# the documentation site on http://127.0.0.1:8000 (tests/test_docs.py builds it with --strict)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) .venv-checkov .pytest_cache .mypy_cache .ruff_cache site
