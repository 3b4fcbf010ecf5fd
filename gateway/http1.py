"""A lean HTTP/1.1 client: pooled keep-alive connections to one origin, parsed by llhttp.

Why not ``aiohttp.ClientSession``: a gateway's upstream calls are all alike (one
origin, buffered bodies, redirects and cookies handled by the caller), and the
general client's per-request machinery (request objects, header merging, tracing,
timers, connector bookkeeping) costs more CPU than the whole rest of a proxied
request.  This module does only what the gateway needs: write one pre-rendered
request, let ``httptools`` (llhttp) frame the response, hand back status, headers
and body.  Failures are the few exception types below; ``gateway.upstream`` maps
them onto the gateway's error tree.

Semantics kept from the general client: TCP_NODELAY, TLS with certificate checks,
connect / read / total timeouts, a connection limit with waiting, idle connections
dropped after ``keepalive`` seconds, ``Content-Encoding: gzip|deflate`` decoded, a
bounded response size (checked against Content-Length first, then while reading).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import zlib
from collections import deque
from dataclasses import dataclass
from typing import cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "Disconnected",
    "Pool",
    "ProtocolError",
    "ReadTimeout",
    "Response",
    "TooLarge",
]


class HTTPClientError(Exception):
    """Base of everything this module raises."""


class ConnectError(HTTPClientError):
    """No connection could be opened; ``strerror`` says why (refused, unreachable, TLS...)."""

    def __init__(self, strerror: str) -> None:
        super().__init__(strerror)
        self.strerror = strerror


class ConnectTimeout(HTTPClientError):
    """Neither a pooled connection nor a new one within the connect timeout: nothing was sent."""


class ReadTimeout(HTTPClientError):
    """The upstream went quiet for the read timeout, or the whole exchange overran the total one."""


class Disconnected(HTTPClientError):
    """The connection closed before a complete response; ``partial`` if some of it had arrived.

    ``reused`` tells a keep-alive connection the upstream may have closed while idle
    (the request was then possibly never seen) from a fresh one.
    """

    def __init__(self, partial: bool, reused: bool) -> None:
        super().__init__("the connection closed " + ("mid-response" if partial else "before a response"))
        self.partial = partial
        self.reused = reused


class ProtocolError(HTTPClientError):
    """The upstream's bytes are not valid HTTP/1.1."""


class TooLarge(HTTPClientError):
    """The response body is larger than the caller's limit."""


@dataclass(slots=True)
class Response:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


_NO_BODY_METHODS = frozenset({"HEAD"})


class _Conn(asyncio.Protocol):
    """One keep-alive connection; runs one exchange at a time."""

    __slots__ = (
        "_body",
        "_decoder",
        "_headers",
        "_limit",
        "_parser",
        "_size",
        "_timer",
        "_waiter",
        "closed",
        "got_bytes",
        "idle_since",
        "keep_alive",
        "last_read",
        "loop",
        "transport",
        "used",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._limit = 0
        self._decoder: zlib._Decompress | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.keep_alive = False
        self.got_bytes = False
        self.used = 0
        self.idle_since = 0.0
        self.last_read = 0.0

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.last_read = self.loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # a callback's own exception (TooLarge) arrives wrapped, as the context
            inner = exc.__context__
            self._fail(inner if isinstance(inner, HTTPClientError) else ProtocolError(f"invalid HTTP response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost settles any waiter

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(Disconnected(self.got_bytes, self.used > 1))
        self._waiter = None
        self._cancel_timer()

    # -- httptools callbacks ----------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        length = None
        encoding = ""
        for name, value in self._headers:
            low = name.lower()
            if low == "content-length":
                length = value
            elif low == "content-encoding":
                encoding = value.strip().lower()
        if length is not None and length.isdigit() and int(length) > self._limit:
            raise TooLarge()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            body = self._decoder.decompress(body, self._limit - self._size + 1)
        self._size += len(body)
        if self._size > self._limit:
            raise TooLarge()
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        self._finish()

    # -- the exchange -------------------------------------------------------------

    def _finish(self) -> None:
        waiter = self._waiter
        self._waiter = None
        self._cancel_timer()
        if waiter is None or waiter.done():
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        if self._decoder is not None:
            body += self._decoder.flush()
            self.keep_alive = self.keep_alive and self._decoder.eof
        status = self._parser.get_status_code()
        waiter.set_result(Response(status, CIMultiDictProxy(CIMultiDict(self._headers)), body))

    def _fail(self, exc: HTTPClientError) -> None:
        waiter = self._waiter
        self._waiter = None
        self._cancel_timer()
        self.keep_alive = False
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_time(self, read: float, deadline: float) -> None:
        """The exchange's one timer: fires at the earlier of the total and read deadlines."""
        now = self.loop.time()
        if now >= deadline or now - self.last_read >= read:
            self._timer = None
            self._fail(ReadTimeout())
            return
        self._timer = self.loop.call_at(min(deadline, self.last_read + read), self._check_time, read, deadline)

    def send(self, data: bytes, head: bool, limit: int, read: float, deadline: float) -> asyncio.Future[Response]:
        assert self.transport is not None
        waiter: asyncio.Future[Response] = self.loop.create_future()
        self._waiter = waiter
        self._headers = []
        self._body = []
        self._size = 0
        self._limit = limit
        self._decoder = None
        self.keep_alive = False
        self.got_bytes = False
        self.used += 1
        now = self.loop.time()
        self.last_read = now
        self._timer = self.loop.call_at(min(deadline, now + read), self._check_time, read, deadline)
        if head:
            # llhttp would wait for the body a HEAD answer never has: finish at the headers
            self._parser = httptools.HttpResponseParser(_HeadOnly(self))
        self.transport.write(data)
        return waiter

    def close(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()


class _HeadOnly:
    """Parser callbacks for a HEAD answer: complete at the end of the headers, never reuse."""

    __slots__ = ("conn",)

    def __init__(self, conn: _Conn) -> None:
        self.conn = conn

    def on_header(self, name: bytes, value: bytes) -> None:
        self.conn.on_header(name, value)

    def on_headers_complete(self) -> None:
        self.conn.keep_alive = False
        self.conn._finish()
        self.conn.close()


class Pool:
    """Keep-alive connections to one origin, at most ``limit`` open at once."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        limit: int,
        keepalive: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.limit = limit
        self.keepalive = keepalive
        self._ssl = (ssl_context or ssl.create_default_context()) if scheme == "https" else None
        self._idle: list[_Conn] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[_Conn | None]] = deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    async def request(
        self,
        head: bytes,
        body: bytes | None,
        *,
        is_head: bool,
        connect_timeout: float,
        read_timeout: float,
        total_timeout: float,
        max_body: int,
    ) -> Response:
        """Send ``head`` (request line + headers, rendered by ``render``) and ``body``; buffer the answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total_timeout
        conn = await self._acquire(loop, min(connect_timeout, total_timeout))
        try:
            data = head if body is None else head + body
            resp = await conn.send(data, is_head, max_body, read_timeout, deadline)
        except BaseException:
            conn.keep_alive = False
            self._release(conn)
            raise
        self._release(conn)
        return resp

    async def _acquire(self, loop: asyncio.AbstractEventLoop, timeout: float) -> _Conn:
        now = loop.time()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive:
                return conn
            self._drop(conn)
        if self._open < self.limit:
            return await self._connect(loop, timeout)
        waiter: asyncio.Future[_Conn | None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                got = await waiter
        except TimeoutError:
            raise ConnectTimeout() from None
        finally:
            if not waiter.done():
                waiter.cancel()
        if got is None:  # a slot freed up: open a new connection in it
            return await self._connect(loop, timeout)
        return got

    async def _connect(self, loop: asyncio.AbstractEventLoop, timeout: float) -> _Conn:
        self._open += 1
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Conn(loop),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                )
        except TimeoutError:
            self._slot_freed()
            raise ConnectTimeout() from None
        except ssl.SSLError as exc:
            self._slot_freed()
            raise ConnectError(f"TLS: {exc.reason or exc}") from None
        except OSError as exc:
            self._slot_freed()
            # asyncio's own text names the address ("Connect call failed (...)"); the errno says why
            raise ConnectError(os.strerror(exc.errno) if exc.errno else type(exc).__name__) from None
        except BaseException:
            self._slot_freed()
            raise
        return conn

    def _release(self, conn: _Conn) -> None:
        if self._closed or conn.closed or not conn.keep_alive:
            self._drop(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = conn.loop.time()
        self._idle.append(conn)

    def _drop(self, conn: _Conn) -> None:
        conn.close()
        self._slot_freed()

    def _slot_freed(self) -> None:
        self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1  # reserved for the waiter, which connects in it
                waiter.set_result(None)
                return

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._drop(conn)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        self._waiters.clear()


def render(
    method: str,
    target: str,
    host: str,
    headers: dict[str, str],
    body_length: int | None,
    user_agent: str | None = None,
) -> bytes:
    """The request line and headers; CR/LF in any name or value is refused (header injection).

    ``user_agent`` is sent unless ``headers`` has its own."""
    parts = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} holds a line break")
        parts.append(f"{name}: {value}\r\n")
    if user_agent is not None and "User-Agent" not in headers:
        parts.append(f"User-Agent: {user_agent}\r\n")
    if body_length is not None:
        parts.append(f"Content-Length: {body_length}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("utf-8")
