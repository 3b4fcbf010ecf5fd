#!/usr/bin/env bash
# Installs what `make bench` drives (wrk, nginx, py-spy for profiling) when missing.
# Bench-only: `make test` never calls this. Safe to run repeatedly.
set -euo pipefail

NEED_WHO=bench/install-deps
PATH="$PATH:/usr/sbin"  # nginx lives there, outside a non-root PATH
# shellcheck source=scripts/debian-need.sh
source "$(dirname "$0")/../scripts/debian-need.sh"

need wrk wrk
need nginx nginx-light
