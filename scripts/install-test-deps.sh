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
