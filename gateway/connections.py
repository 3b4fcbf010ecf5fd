"""Client connections ``gateway serve`` holds at once: capped, so a flood of idle sockets cannot lock it up.

Every open socket costs a file descriptor.  Under a 1,024 limit, 1,500 idle sockets once
made the gateway unreachable (``accept`` failed with EMFILE) until the header timeout closed
them, and nothing said so.  Now:

- at start the soft open-file limit is raised to the hard one (``raise_fd_limit``);
- ``server.max_connections`` caps open client connections (default: half the open-file
  limit, the rest left for upstream connections, Redis and files).  At the cap, a new
  connection makes room by closing the oldest *idle* one (no request in progress: a
  keep-alive socket, or one still sending its headers); if none is idle the newcomer
  gets a 503 and is closed;
- ``server.max_connections_per_ip`` caps one address; its extra connections get the 503;
- each of these is logged (at most one line per ``LOG_EVERY`` seconds, with counts) and
  counted in ``gateway_connections_closed_total{reason}``.

The caps are per process: with ``--workers N`` each worker has its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import socket
import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CollectorRegistry, Counter

from gateway.config import ServerSettings

log = logging.getLogger("gateway.connections")

#: seconds between two log lines about the caps
LOG_EVERY = 10.0
#: seconds a refused connection stays open for its 503 to be read
LINGER = 0.5
#: the reasons a connection is closed by a cap (the metric's label values)
REASONS = ("idle_evicted", "over_max_connections", "over_max_connections_per_ip")


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
            return soft
        log.info("open-file limit raised from %d to %d", soft, target)
        return target
    return soft


def default_max_connections(fd_limit: int) -> int:
    return max(16, fd_limit // 2)


def _busy(handler: RequestHandler) -> bool:
    """A request is being handled or queued on this connection (aiohttp keeps this private)."""
    return bool(getattr(handler, "_request_in_progress", False) or getattr(handler, "_messages", None))


def _refusal(message: str) -> bytes:
    body = json.dumps({"error": {"code": "too_many_connections", "message": message, "route": None}}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Retry-After: 1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    """Wraps one aiohttp ``web.Server``'s connection bookkeeping with the caps."""

    def __init__(
        self,
        max_connections: int,
        max_per_ip: int | None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.clock = clock
        #: open connections, oldest first, with their peer address
        self.open: dict[RequestHandler, tuple[str, asyncio.Transport]] = {}
        self.per_ip: Tally[str] = Tally()
        self._pending: Tally[str] = Tally()
        self._last_log = float("-inf")
        self._flush: asyncio.TimerHandle | None = None
        self.closed = Counter(
            "gateway_connections_closed_total",
            "Client connections closed by server.max_connections or max_connections_per_ip, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in REASONS:
            self.closed.labels(reason)

    def install(self, server: web.Server) -> None:
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self.connection_made(handler, transport)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            self.connection_lost(handler)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unix"
        if self.max_per_ip is not None and self.per_ip[ip] >= self.max_per_ip:
            why = f"{ip} has {self.per_ip[ip]} connections open"
            self._refuse(handler, transport, "over_max_connections_per_ip", why)
            return
        evicted = None
        if len(self.open) >= self.max_connections:
            victim = next((h for h in self.open if not _busy(h)), None)
            if victim is None:
                self._refuse(handler, transport, "over_max_connections", f"all {len(self.open)} connections are busy")
                return
            evicted = self.connection_lost(victim)
            if evicted is not None:
                evicted[1].close()  # no request on it: a client may reconnect, as after a keep-alive timeout
        self.open[handler] = (ip, transport)
        self.per_ip[ip] += 1
        if evicted is not None:
            self._note("idle_evicted")  # after the newcomer is counted: the report shows the cap full

    def connection_lost(self, handler: RequestHandler) -> tuple[str, asyncio.Transport] | None:
        entry = self.open.pop(handler, None)
        if entry is not None:
            ip = entry[0]
            self.per_ip[ip] -= 1
            if self.per_ip[ip] <= 0:
                del self.per_ip[ip]
        return entry

    def _refuse(self, handler: RequestHandler, transport: asyncio.Transport, reason: str, why: str) -> None:
        """A 503 the client can read, then close; what it sends meanwhile is read and dropped, never handled."""
        self._note(reason)
        handler.close()  # aiohttp's handler discards every byte from now on
        with contextlib.suppress(Exception):  # a transport already gone needs no answer
            transport.write(_refusal(f"the gateway has too many connections ({why}); retry shortly"))
            if transport.can_write_eof():
                transport.write_eof()
        # closing at once, with the client's request unread, would reset the connection and lose the 503
        asyncio.get_running_loop().call_later(LINGER, transport.close)

    def _note(self, reason: str) -> None:
        """Count and (rate-limited) log a connection closed by a cap."""
        self.closed.labels(reason).inc()
        self._pending[reason] += 1
        now = self.clock()
        if now - self._last_log >= LOG_EVERY:
            self._log(now)
        elif self._flush is None:
            with contextlib.suppress(RuntimeError):
                delay = LOG_EVERY - (now - self._last_log)
                self._flush = asyncio.get_running_loop().call_later(delay, lambda: self._log(self.clock()))

    def _log(self, now: float) -> None:
        self._flush = None
        if not self._pending:
            return
        done = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(self._pending.items()))
        log.warning(
            "connection cap reached (server.max_connections %d, max_connections_per_ip %s; %d open): "
            "closed %s since the last report",
            self.max_connections,
            self.max_per_ip if self.max_per_ip is not None else "off",
            len(self.open),
            done,
        )
        self._pending.clear()
        self._last_log = now


class _GuardedRunner(web.AppRunner):
    """An AppRunner whose server is wrapped by a ``ConnectionGuard`` before any site listens."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        self.guard.install(server)
        return server


def _bound_port(runner: web.BaseRunner, asked: int) -> int:
    """The TCP port actually bound (``--port 0`` picks a free one): the first address with a port."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[1], int):
            return address[1]
    return asked


async def _serve(
    runner: _GuardedRunner,
    host: str,
    port: int,
    sock: socket.socket | None,
    reuse_port: bool,
    listening: Callable[[int], None],
) -> None:
    await runner.setup()
    try:
        sites: list[web.BaseSite] = [web.TCPSite(runner, host, port, reuse_port=reuse_port)]
        if sock is not None:
            sites.append(web.SockSite(runner, sock))
        for site in sites:
            await site.start()
        listening(_bound_port(runner, port))
        while True:
            await asyncio.sleep(3600)
    finally:
        await runner.cleanup()


def run(
    app: web.Application,
    settings: ServerSettings,
    *,
    host: str,
    port: int,
    sock: socket.socket | None,
    reuse_port: bool,
    listening: Callable[[int], None],
    registry: CollectorRegistry | None = None,
) -> None:
    """``web.run_app`` with the connection caps; returns on SIGINT/SIGTERM, raises OSError if it cannot listen."""
    fd_limit = raise_fd_limit()
    cap = settings.max_connections or default_max_connections(fd_limit)
    guard = ConnectionGuard(cap, settings.max_connections_per_ip, registry)
    runner = _GuardedRunner(app, guard, handle_signals=True, access_log=None)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(runner, host, port, sock, reuse_port, listening))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        loop.run_until_complete(asyncio.gather(main, return_exceptions=True))  # the runner's cleanup
        rest = asyncio.all_tasks(loop)
        for task in rest:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()
