#!/usr/bin/env bash
# Installs the real servers the test suite drives (Redis, Prometheus, Chromium, ...) from
# Debian packages when they are missing. Called by `make test`; safe to run repeatedly.
set -euo pipefail

updated=0
need() {  # need BINARY DEBIAN_PACKAGE...
  local bin=$1; shift
  if command -v "$bin" >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" != 0 ]; then
    echo "install-test-deps: $bin is missing and we are not root; install: $*" >&2
    exit 1
  fi
  if [ $updated = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# one line per tool the tests need, e.g.:  need redis-server redis-server
need redis-server redis-server
need prometheus prometheus       # the alerting end-to-end test scrapes the gateway with a real Prometheus
need promtool prometheus         # promtool check metrics / test rules
need chromium chromium           # the /status page is checked in a real headless browser
