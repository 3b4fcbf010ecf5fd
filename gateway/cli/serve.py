"""``routegate serve``: check the flags, fork the workers, listen (gateway.connections)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import signal
import socket
import sys

from aiohttp import web

from gateway import __version__
from gateway.cli.common import EXIT_INVALID, EXIT_UNBINDABLE, EXIT_USAGE, _load, is_loopback
from gateway.config import ConfigError, parse_duration
from gateway.netloc import netloc


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
            where = netloc(args.host, args.port)
            print(f"gateway serve: cannot listen on {where}: {taken.strerror or taken}", file=sys.stderr)
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

    def _serving(port: int) -> None:
        """Once listening, not before: the port bound (``--port 0`` picks one), not the one asked for."""
        line = f"routegate {__version__} serving {len(cfg.routes)} routes on http://{netloc(args.host, port)}"
        if args.workers > 1:
            line += f" (worker {os.getpid()} of {args.workers})"
        print(line, flush=True)

    try:
        connections.run(  # web.run_app, with the connection caps (gateway.connections)
            app,
            gateway.runtime.config.server,
            host=args.host,
            port=args.port,
            sock=own_socket,  # admin calls relayed by the other workers
            listening=_serving,
            reuse_port=args.workers > 1,
            registry=gateway.registry,
        )
    except OSError as exc:
        print(f"gateway serve: cannot listen on {netloc(args.host, args.port)}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNBINDABLE
    return 0
