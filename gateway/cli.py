"""``routegate`` (alias ``gateway``): serve, check, probe and inspect routes.yaml; sandboxes and demo.

Exit codes: 0 success; 1 the routes file is invalid (every problem printed as
file:line: key: message); 2 wrong command-line usage, including ``serve`` refusing
to bind a non-loopback address while no client keys are configured; 3 ``serve``
cannot listen; 4 ``probe`` found a broken route (``EXIT_CODES`` below).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.config import Config, ConfigError, load_config, parse_duration

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


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EXIT_INVALID
    from gateway.access import Access
    from gateway.auth import Credentials

    print(f"{args.config}: OK ({len(cfg.upstreams)} upstreams, {len(cfg.routes)} routes, digest {cfg.digest})")
    creds = Credentials()
    for problem in Access(cfg.access, creds).without_value():  # valid, but with this environment
        print(f"{args.config}: warning: {problem}", file=sys.stderr)
    for upstream in cfg.upstreams.values():
        users = [r.name for r in cfg.routes if r.upstream == upstream.name and r.auth]
        missing = creds.missing(upstream) if users else []
        if missing:
            print(
                f"{args.config}: warning: upstreams.{upstream.name}.auth: no value ({'; '.join(missing)}); "
                f"{', '.join(users)} will answer 502 upstream_credentials_missing",
                file=sys.stderr,
            )
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    """Run the contract probes once; exit 4 listing each broken route (for cron and CI)."""
    from gateway.server import Gateway

    cfg = _load(args.config)
    if cfg is None:
        return EXIT_INVALID
    probed = {r.name for r in cfg.routes if r.probe is not None}
    unknown = [n for n in args.route or () if n not in probed]
    if unknown:
        print(
            f"gateway probe: no probe for route(s) {', '.join(unknown)}; probed: {', '.join(sorted(probed))}",
            file=sys.stderr,
        )
        return EXIT_USAGE

    logging.getLogger("gateway").setLevel(logging.ERROR)  # the report below says it all

    async def run() -> list[Any]:
        gateway = Gateway(cfg)
        try:
            return await gateway.prober.run_round(args.route or None)
        finally:
            await gateway.close()

    results = asyncio.run(run())
    width = max((len(r.route) for r in results), default=0)
    for r in results:
        detail = f"{r.code}: {r.message}" if r.code else f"{r.duration * 1000:.0f} ms"
        print(f"{r.outcome.upper():8} {r.route.ljust(width)}  {detail}")
    broken = [r.route for r in results if r.outcome == "broken"]
    if broken:
        print(f"gateway probe: {len(broken)} of {len(results)} route(s) broken: {', '.join(broken)}", file=sys.stderr)
        return EXIT_BROKEN
    if not results:
        print(f"gateway probe: {args.config} declares no probes", file=sys.stderr)
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from gateway.openapi import build

    cfg = _load(args.config)
    if cfg is None:
        return EXIT_INVALID
    print(json.dumps(build(cfg), indent=args.indent, ensure_ascii=False))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from gateway.config.schema import render

    sys.stdout.write(render())
    return 0


def cmd_routes(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EXIT_INVALID
    rows = [("ROUTE", "STABLE", "UPSTREAM", "TARGETS")]
    for r in cfg.routes:
        targets = " | ".join(t.text for t in r.targets)
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
    from gateway import logs, peers, workers
    from gateway.peers import Peers

    if args.workers < 1 or (args.workers > 1 and args.port == 0):
        print("gateway serve: --workers must be at least 1, and needs a fixed --port (not 0)", file=sys.stderr)
        return EXIT_USAGE
    if not args.worker_timeout >= 2 * workers.HEARTBEAT_EVERY:  # also refuses nan
        print("gateway serve: --worker-timeout must be at least 2 (seconds: two heartbeats)", file=sys.stderr)
        return EXIT_USAGE
    formatter = logs.setup(args.log_level)
    cfg = _load(args.config)
    if cfg is None:
        return EXIT_INVALID
    open_bind = not is_loopback(args.host)
    if open_bind and not cfg.access.clients and not args.allow_open:
        print(
            f"gateway: refusing to serve {args.host} without client keys: anyone who can reach it could use "
            "the upstream credentials. Configure clients.keys in the routes file, bind 127.0.0.1, "
            "or pass --allow-open if a firewall or proxy in front already guards it.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    watch = None
    if args.watch_interval != "off":
        try:
            watch = parse_duration(args.watch_interval)
        except ValueError as exc:
            print(f"gateway serve: --watch-interval: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if watch <= 0:
            print("gateway serve: --watch-interval must be longer than 0s (or off)", file=sys.stderr)
            return EXIT_USAGE
    mates: Peers | None = None
    own_socket: socket.socket | None = None
    if args.workers > 1:
        taken = workers.port_taken(args.host, args.port)
        if taken is not None:
            print(
                f"gateway serve: cannot listen on {args.host}:{args.port}: {taken.strerror or taken}", file=sys.stderr
            )
            return EXIT_UNBINDABLE
        try:
            mates = Peers(peers.make_directory())  # the supervisor's: where workers find each other
        except OSError as exc:
            print(
                f"gateway serve: cannot make the workers' sockets ({exc.strerror or exc}); point "
                "RUNTIME_DIRECTORY, XDG_RUNTIME_DIR or TMPDIR (the first set) at a short, writable directory",
                file=sys.stderr,
            )
            return EXIT_UNBINDABLE
        mates.remember(cfg)
    # multiprocess metrics must be chosen before prometheus_client is first imported (by the server),
    # and are only now: after this the supervisor removes the directories it made, whatever happens
    try:
        metrics_dir = workers.use_multiprocess_metrics() if args.workers > 1 else None
    except OSError as exc:
        if mates is not None:
            shutil.rmtree(mates.directory, ignore_errors=True)
        print(f"gateway serve: {workers.MULTIPROC_ENV}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from gateway import connections
    from gateway.server import GATEWAY, build_app

    if mates is not None:
        code = workers.fork_workers(
            args.workers,
            [d for d in (metrics_dir, str(mates.directory)) if d],
            on_exit=functools.partial(peers.forget, mates.directory),
            hung_after=args.worker_timeout,
        )
        if code is not None:
            return code  # the supervisor, once every worker has exited; workers go on below
        mates = Peers(mates.directory)  # this worker's own socket: bound before the config is read
        try:
            own_socket = mates.listen()
        except OSError as exc:
            print(f"gateway serve: cannot listen on {mates.socket}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_UNBINDABLE  # stops every worker, as when the port cannot be bound
        cfg = mates.current_config(cfg)  # a replacement worker: what the others serve now
    _install_uvloop()
    app = build_app(cfg, watch=watch, probes=not args.no_probes, host=args.host)
    gateway = app[GATEWAY]
    gateway.peers = mates
    formatter.redactor.source = lambda: logs.secret_values(gateway.runtime.config, gateway.credentials)
    if open_bind and cfg.access.clients and not args.allow_open:
        gateway.requires_client_keys = f"the gateway listens on {args.host} (a reload may not open it)"

    async def _on_startup(app: web.Application) -> None:
        workers.settle_gc()  # the app is built: what exists now lives as long as the process
        loop = asyncio.get_running_loop()
        workers.start_heartbeat(loop)  # with --workers: the supervisor replaces a worker whose loop hangs

        def _reload() -> None:
            # an invalid file is logged and counted; the old config keeps serving
            with contextlib.suppress(ConfigError):
                app[GATEWAY].reload(args.config)

        loop.add_signal_handler(signal.SIGHUP, _reload)

    app.on_startup.append(_on_startup)
    serving = f"routegate {__version__} serving {len(cfg.routes)} routes on http://{args.host}:{args.port}"
    if args.workers > 1:
        serving += f" (worker {os.getpid()} of {args.workers})"
    try:
        connections.run(  # web.run_app, with the connection caps (gateway.connections)
            app,
            gateway.runtime.config.server,
            host=args.host,
            port=args.port,
            sock=own_socket,  # admin calls relayed by the other workers
            listening=lambda: print(serving, flush=True),  # once listening, not before
            reuse_port=args.workers > 1,
            registry=gateway.registry,
        )
    except OSError as exc:
        print(f"gateway serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNBINDABLE
    return 0


#: the sandbox upstreams are a development package, not in the production image or wheel
NO_SANDBOX = (
    "the sandbox upstreams are not installed here (the `sandbox` package comes with a development\n"
    "install: `pip install -e .` or `make install` in a routegate checkout; the image has none)"
)


def _without_sandbox(command: str, exc: ModuleNotFoundError) -> int:
    """A clear usage error for ``gateway sandbox``/``demo`` where only the gateway is installed."""
    if exc.name is None or exc.name.split(".")[0] != "sandbox":
        raise exc
    print(f"gateway {command}: {NO_SANDBOX}", file=sys.stderr)
    return EXIT_USAGE


def cmd_sandbox(args: argparse.Namespace) -> int:
    try:
        from sandbox.runner import main as sandbox_main
    except ModuleNotFoundError as exc:
        return _without_sandbox("sandbox", exc)

    argv = [
        "--host",
        args.host,
        "--observable-port",
        str(args.observable_port),
        "--posthog-port",
        str(args.posthog_port),
    ]
    try:
        return sandbox_main(argv)
    except OSError as exc:
        print(f"gateway sandbox: cannot listen on {args.host}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNBINDABLE


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from gateway.demo import run_demo
    except ModuleNotFoundError as exc:
        return _without_sandbox("demo", exc)

    _setup_logging(args.log_level)
    try:
        return run_demo(args.config, args.host, args.port, args.observable_port, args.posthog_port)
    except OSError as exc:
        print(f"gateway demo: cannot listen on {args.host}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNBINDABLE


def _sandbox_switches() -> str | None:
    """The sandbox's switch table for ``gateway sandbox --help``, where the sandbox is installed."""
    try:
        from sandbox.switches import help_epilog
    except ImportError:
        return None
    return help_epilog()


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
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
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
    p.add_argument(
        "--log-level",
        default=DEFAULT_LOG_LEVEL,
        type=_log_level,
        metavar="LEVEL",
        help="debug, info (one line per request), warning or error (default: $ROUTEGATE_LOG_LEVEL or info)",
    )
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
            "Validate the routes file and print every problem as file:line: key: message. Exit 1 if it is invalid."
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
    p.add_argument("--host", default="127.0.0.1", help="address both sandboxes bind (default 127.0.0.1)")
    p.add_argument("--observable-port", type=int, default=9001, help="the Observable sandbox's port (default 9001)")
    p.add_argument("--posthog-port", type=int, default=9002, help="the PostHog sandbox's port (default 9002)")
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser(
        "demo",
        help="sandboxes + gateway in one process, with curl examples",
        description="Start both sandbox upstreams and the gateway wired to them, then print example curl commands.",
    )
    config_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address the gateway and sandboxes bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="the gateway's port (default 8080)")
    p.add_argument("--observable-port", type=int, default=9001, help="the Observable sandbox's port (default 9001)")
    p.add_argument("--posthog-port", type=int, default=9002, help="the PostHog sandbox's port (default 9002)")
    p.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="the gateway's log level; info logs one line per request (default warning)",
    )
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
