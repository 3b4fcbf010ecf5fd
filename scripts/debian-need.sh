# Sourced by scripts/install-test-deps.sh and bench/install-deps.sh: `need BINARY DEBIAN_PACKAGE...`
# installs the package when the binary is missing (apt-get update at most once per run).
# NEED_WHO names the caller in the error printed when a package is missing and we are not root.

updated=0
need() {  # need BINARY DEBIAN_PACKAGE...
  local bin=$1; shift
  if command -v "$bin" >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" != 0 ]; then
    echo "${NEED_WHO:-install}: $bin is missing and we are not root; install: $*" >&2
    exit 1
  fi
  if [ $updated = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
