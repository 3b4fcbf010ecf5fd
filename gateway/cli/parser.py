"""The command line: every command, flag and default, as ``--help`` and docs/cli.md show them."""

from __future__ import annotations

import argparse

from gateway import __version__
from gateway.cli.commands import (
    _sandbox_switches,
    cmd_check,
    cmd_demo,
    cmd_openapi,
    cmd_probe,
    cmd_routes,
    cmd_sandbox,
    cmd_schema,
)
from gateway.cli.common import DEFAULT_LOG_LEVEL, EXIT_CODES, _log_level
from gateway.cli.serve import cmd_serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="routegate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="routegate: a stable HTTP API in front of unstable ones, driven by routes.yaml.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"routegate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "config_pos",
            nargs="?",
            metavar="ROUTES_YAML",
            help="the routes file (default: $ROUTEGATE_CONFIG, else routes.yaml)",
        )
        p.add_argument(
            "--config", "-c", default=None, help="the routes file (same as the positional argument; default as above)"
        )

    p = sub.add_parser(
        "serve",
        help="serve the stable API",
        description=(
            "Serve the stable API described by the routes file. SIGHUP, a change of the file (polled) and "
            "POST /admin/reload reload it; an invalid file is refused, logged and counted, and the old config "
            "keeps serving. Without client keys only a loopback address is served unless --allow-open. "
            "Logs are JSON lines on stderr, one per request at level info."
        ),
    )
    config_arg(p)
    listen_args(p, "the gateway binds")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help=(
            "worker processes sharing the port (SO_REUSEPORT), e.g. one per core; /metrics sums them and "
            "admin calls reach them all (default 1)"
        ),
    )
    p.add_argument(
        "--worker-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help=(
            "with --workers: a worker whose event loop sends no heartbeat for this long is hung, "
            "killed (SIGKILL) and replaced (default 10)"
        ),
    )
    p.add_argument(
        "--allow-open",
        action="store_true",
        help="serve a non-loopback address even though no client keys are configured (default: refuse)",
    )
    p.add_argument(
        "--no-probes",
        action="store_true",
        help="do not run the routes' contract probes in the background (default: they run; see `probes:`)",
    )
    p.add_argument(
        "--watch-interval",
        default="1s",
        metavar="DURATION",
        help="how often to check the routes file for changes, e.g. 1s or 250ms; 'off' to disable (default 1s)",
    )
    log_level_arg(p, DEFAULT_LOG_LEVEL, "$ROUTEGATE_LOG_LEVEL or info")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "probe",
        help="run the routes' contract probes once (for cron and CI)",
        description=(
            "Send each route's probe (a safe GET with sample params, checked against the route's shape) "
            "to the real upstreams, with the credentials from the environment, and print one line per route: "
            "OK, BROKEN (with the reason) or SKIPPED (no sample from the route it depends on). "
            "Exit 4 if any route is broken."
        ),
    )
    config_arg(p)
    p.add_argument(
        "--route",
        action="append",
        metavar="NAME",
        help="probe only this route (and those it takes samples from); repeatable (default: every route)",
    )
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser(
        "check",
        help="validate a routes file",
        description=(
            "Validate the routes file and print every problem as file:line: key: message, in the file's order. "
            "Exit 1 if it is invalid."
        ),
    )
    config_arg(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "openapi",
        help="print the OpenAPI 3.1 document of the stable API",
        description=(
            "Print the OpenAPI 3.1 document generated from the routes file (the server serves the same at "
            "GET /openapi.json). Exit 1 if the file is invalid."
        ),
    )
    config_arg(p)
    p.add_argument("--indent", type=int, default=2, help="JSON indentation (default 2)")
    p.set_defaults(func=cmd_openapi)

    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of routes.yaml (for editors)",
        description=(
            "Print the JSON Schema of routes.yaml, generated from the config models. The repository ships it as "
            "routes.schema.json, which routes.yaml names in its first line (# yaml-language-server: $schema=...) "
            "so that editors validate and complete the file. `gateway check` still has the last word: it also "
            "checks what spans sections (route names, params, overlaps)."
        ),
    )
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser(
        "routes",
        help="print the stable → upstream table",
        description="Print each stable route with its upstream and ordered targets. Exit 1 if the file is invalid.",
    )
    config_arg(p)
    p.set_defaults(func=cmd_routes)

    p = sub.add_parser(
        "sandbox",
        help="run the Observable and PostHog sandbox upstreams",
        description=(
            "Run local emulations of the Observable and PostHog APIs "
            "and print the env vars that point the gateway at them."
        ),
        epilog=_sandbox_switches(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listen_args(p, "both sandboxes bind", port=False)
    sandbox_ports(p)
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser(
        "demo",
        help="sandboxes + gateway in one process, with curl examples",
        description="Start both sandbox upstreams and the gateway wired to them, then print example curl commands.",
    )
    config_arg(p)
    listen_args(p, "the gateway and both sandboxes bind")
    sandbox_ports(p)
    log_level_arg(p, "warning", "warning")
    p.set_defaults(func=cmd_demo)
    return parser


def port_number(value: str) -> int:
    """A TCP port, 0 (any free one) to 65535: a larger one would be wrapped by getaddrinfo and bind another."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0-65535)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535; 0 picks a free one)")
    return port


def listen_args(p: argparse.ArgumentParser, who: str, *, port: bool = True) -> None:
    """--host (and --port: the gateway's): one wording and one default wherever a command listens."""
    p.add_argument("--host", default="127.0.0.1", help=f"the address {who} (default 127.0.0.1)")
    if port:
        p.add_argument("--port", type=port_number, default=8080, help="the gateway's port (default 8080)")


def sandbox_ports(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--observable-port", type=port_number, default=9001, help="the Observable sandbox's port (default 9001)"
    )
    p.add_argument("--posthog-port", type=port_number, default=9002, help="the PostHog sandbox's port (default 9002)")


def log_level_arg(p: argparse.ArgumentParser, default: str, said: str) -> None:
    """--log-level, checked the same way (``_log_level``) wherever a command logs."""
    p.add_argument(
        "--log-level",
        default=default,
        type=_log_level,
        metavar="LEVEL",
        help=f"debug, info (one line per request), warning or error (default: {said})",
    )
