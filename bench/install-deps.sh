#!/usr/bin/env bash
# Installs what `make bench` drives (wrk, nginx, py-spy for profiling) when missing.
# Bench-only: `make test` never calls this. Safe to run repeatedly.
set -euo pipefail

updated=0
need() {  # need BINARY DEBIAN_PACKAGE...
  local bin=$1; shift
  if command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ]; then return 0; fi
  if [ "$(id -u)" != 0 ]; then
    echo "bench/install-deps: $bin is missing and we are not root; install: $*" >&2
    exit 1
  fi
  if [ $updated = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need wrk wrk
need nginx nginx-light
