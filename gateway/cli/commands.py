"""The short commands: check, probe, openapi, schema, routes, and the development ones, sandbox and demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from gateway.cli.common import (
    EXIT_BROKEN,
    EXIT_INVALID,
    EXIT_UNBINDABLE,
    EXIT_USAGE,
    _load,
    _setup_logging,
    stdout_gone,
)


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
    try:
        for r in results:
            detail = f"{r.code}: {r.message}" if r.code else f"{r.duration * 1000:.0f} ms"
            print(f"{r.outcome.upper():8} {r.route.ljust(width)}  {detail}")
        sys.stdout.flush()
    except BrokenPipeError:  # the report's reader went away: the verdict (exit code, stderr summary) still stands
        stdout_gone()
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
        targets = " | ".join(t.label for t in r.targets)
        rows.append((r.name, r.stable, r.upstream, targets))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
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
