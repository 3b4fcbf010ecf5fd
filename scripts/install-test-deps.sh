#!/usr/bin/env bash
# Installs the real servers the test suite drives (Redis, Prometheus, Chromium, ...) from
# Debian packages when they are missing. Called by `make test`; safe to run repeatedly.
set -euo pipefail

NEED_WHO=install-test-deps
# shellcheck source=scripts/debian-need.sh
source "$(dirname "$0")/debian-need.sh"

# one line per tool the tests need, e.g.:  need redis-server redis-server
need redis-server redis-server
need prometheus prometheus       # the alerting end-to-end test scrapes the gateway with a real Prometheus
need promtool prometheus         # promtool check metrics / test rules
need chromium chromium           # the /status page is checked in a real headless browser
need nginx nginx                 # a real proxy_cache in front of the gateway (tests/test_shared_cache_front.py)

# checkov (tests/test_deploy_hardening.py scans deploy/ and the rendered overlay) pins an older
# `packaging` than pytest needs, so it gets a virtualenv of its own beside the project's
if [ ! -x .venv-checkov/bin/checkov ]; then
  "${PY:-python3}" -m venv .venv-checkov
  .venv-checkov/bin/pip install -q "checkov>=3.2,<4"
fi
