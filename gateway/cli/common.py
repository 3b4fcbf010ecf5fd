"""What every ``routegate`` command shares: the defaults, the exit codes, loading routes.yaml."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from gateway.config import Config, ConfigError, load_config

DEFAULT_CONFIG = os.environ.get("ROUTEGATE_CONFIG", "routes.yaml")
DEFAULT_LOG_LEVEL = os.environ.get("ROUTEGATE_LOG_LEVEL", "info").lower()
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_UNBINDABLE = 3
EXIT_BROKEN = 4
EXIT_CODES = """\
Exit codes (every command):
  0  ok
  1  invalid routes file (problems printed as file:line: key: message)
  2  usage error, including serve refusing a non-loopback --host without client keys,
     and sandbox or demo where the sandbox package is not installed
  3  serve, sandbox or demo cannot listen on the address (in use, or not on this host),
     or serve cannot make the workers' sockets
  4  probe found at least one broken route

Run `routegate COMMAND --help` for a command's options. `gateway` is the same command."""


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return None


def _setup_logging(level: str) -> None:
    from gateway import logs

    logs.setup(level)


def _log_level(value: str) -> str:
    from gateway.logs import LEVELS

    if value.lower() not in LEVELS:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(LEVELS)}")
    return value.lower()


def is_loopback(host: str) -> bool:
    """Only literal loopback addresses and ``localhost`` count; a name could resolve anywhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def stdout_gone() -> None:
    """The reader of stdout went away (``routegate openapi | head -1``): point stdout at /dev/null, so
    that later prints and the interpreter's own flush at exit are quiet."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
