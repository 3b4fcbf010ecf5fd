"""``gateway``: serve, check and inspect routes.yaml, run the sandbox upstreams or the demo.

Exit codes: 0 success; 1 the routes file is invalid (every problem printed as
file:line: key: message); 2 wrong command-line usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from gateway import __version__
from gateway.config import Config, ConfigError, load_config

DEFAULT_CONFIG = os.environ.get("ROUTEGATE_CONFIG", "routes.yaml")
EXIT_INVALID = 1


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return None


def _setup_logging(level: str) -> None:
    fmt = "%(asctime)s %(levelname)s %(name)s %(message)s" if level.upper() == "DEBUG" else "%(message)s"
    logging.basicConfig(level=level.upper(), format=fmt)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EXIT_INVALID
    print(f"{args.config}: OK ({len(cfg.upstreams)} upstreams, {len(cfg.routes)} routes, digest {cfg.digest})")
    return 0


def cmd_routes(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EXIT_INVALID
    rows = [("ROUTE", "STABLE", "UPSTREAM", "TARGETS")]
    for r in cfg.routes:
        targets = " | ".join(f"{t.method} {t.path.raw}" for t in r.targets)
        rows.append((r.name, r.stable, r.upstream, targets))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    return 0


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.server import GATEWAY, build_app

    _setup_logging(args.log_level)
    cfg = _load(args.config)
    if cfg is None:
        return EXIT_INVALID
    _install_uvloop()
    app = build_app(cfg)

    async def _on_startup(app: web.Application) -> None:
        loop = asyncio.get_running_loop()

        def _reload() -> None:
            # an invalid file is logged and counted; the old config keeps serving
            with contextlib.suppress(ConfigError):
                app[GATEWAY].reload(args.config)

        loop.add_signal_handler(signal.SIGHUP, _reload)

    app.on_startup.append(_on_startup)
    print(f"routegate {__version__} serving {len(cfg.routes)} routes on http://{args.host}:{args.port}", flush=True)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from gateway.sandbox.runner import main as sandbox_main

    argv = [
        "--host",
        args.host,
        "--observable-port",
        str(args.observable_port),
        "--posthog-port",
        str(args.posthog_port),
    ]
    return sandbox_main(argv)


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    _setup_logging(args.log_level)
    return run_demo(args.config, args.host, args.port, args.observable_port, args.posthog_port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="routegate: a stable HTTP API in front of unstable ones, driven by routes.yaml.",
        epilog="Exit codes: 0 ok, 1 invalid routes file (problems printed as file:line: key: message), 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"routegate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "config_pos",
            nargs="?",
            metavar="ROUTES_YAML",
            help=f"the routes file (default: $ROUTEGATE_CONFIG or {DEFAULT_CONFIG})",
        )
        p.add_argument("--config", "-c", default=None, help="the routes file (same as the positional argument)")

    p = sub.add_parser(
        "serve",
        help="serve the stable API",
        description=(
            "Serve the stable API described by the routes file. SIGHUP reloads it; "
            "an invalid file is refused and the old config keeps serving."
        ),
    )
    config_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "check",
        help="validate a routes file",
        description=(
            "Validate the routes file and print every problem as file:line: key: message. Exit 1 if it is invalid."
        ),
    )
    config_arg(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "routes",
        help="print the stable → upstream table",
        description="Print each stable route with its upstream and ordered targets.",
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
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--observable-port", type=int, default=9001)
    p.add_argument("--posthog-port", type=int, default=9002)
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser(
        "demo",
        help="sandboxes + gateway in one process, with curl examples",
        description="Start both sandbox upstreams and the gateway wired to them, then print example curl commands.",
    )
    config_arg(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--observable-port", type=int, default=9001)
    p.add_argument("--posthog-port", type=int, default=9002)
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "config_pos"):
        args.config = args.config or args.config_pos or DEFAULT_CONFIG
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
