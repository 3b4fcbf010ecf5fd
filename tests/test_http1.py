"""The lean upstream client (gateway.http1) against real sockets that misbehave on purpose."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trustme

from gateway import http1

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LIMITS = {"connect_timeout": 2.0, "read_timeout": 2.0, "total_timeout": 5.0, "max_body": 1 << 20}


@asynccontextmanager
async def server(script: Script) -> AsyncIterator[tuple[http1.Pool, list[int]]]:
    """A raw TCP server running ``script`` per connection; yields a pool to it and the connection count."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    pool = http1.Pool("http", "127.0.0.1", port, limit=4)
    try:
        yield pool, connections
    finally:
        await pool.close()
        srv.close()
        await srv.wait_closed()


async def head_of(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def get(path: str = "/x", method: str = "GET", headers: dict[str, str] | None = None) -> bytes:
    return http1.render(method, path, "up.example", headers or {"Accept": "application/json"}, None)


async def test_keep_alive_reuses_one_connection_and_sends_what_was_rendered() -> None:
    seen: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await head_of(reader))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()

    async with server(script) as (pool, conns):
        for _ in range(3):
            resp = await pool.request(get("/a?b=1"), None, is_head=False, **LIMITS)
            assert (resp.status, resp.body, resp.headers["content-type"]) == (200, b"{}", "application/json")
        assert len(conns) == 1
    assert seen[0] == b"GET /a?b=1 HTTP/1.1\r\nHost: up.example\r\nAccept: application/json\r\n\r\n"


async def test_a_body_goes_with_its_length() -> None:
    got: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await head_of(reader)
        got.append(head + await reader.readexactly(7))
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")

    async with server(script) as (pool, _):
        head = http1.render("POST", "/new", "h", {"Content-Type": "application/json"}, 7)
        resp = await pool.request(head, b'{"a":1}', is_head=False, **LIMITS)
    assert resp.status == 201 and resp.body == b""
    assert got[0].endswith(b'Content-Length: 7\r\n\r\n{"a":1}')


async def test_chunked_and_gzip_bodies_are_decoded() -> None:
    payload = b'{"items": [' + b'"x",' * 2000 + b'"y"]}'

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await head_of(reader)
        packed = gzip.compress(payload)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(packed), 100):
            part = packed[i : i + 100]
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    async with server(script) as (pool, _):
        resp = await pool.request(get(), None, is_head=False, **LIMITS)
    assert resp.body == payload


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_the_limit_is_refused(chunked: bool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await head_of(reader)
        if chunked:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(50):
                writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
                await writer.drain()
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n")  # refused on the header alone
        await asyncio.sleep(1)

    async with server(script) as (pool, _):
        with pytest.raises(http1.TooLarge):
            await pool.request(get(), None, is_head=False, **{**LIMITS, "max_body": 10_000})
        assert pool.open_connections == 0  # a half-read connection is never reused


async def test_head_completes_at_the_headers() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await head_of(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        await asyncio.sleep(2)

    async with server(script) as (pool, _):
        resp = await asyncio.wait_for(pool.request(get(method="HEAD"), None, is_head=True, **LIMITS), 1)
    assert resp.status == 200 and resp.headers["Content-Length"] == "1234" and resp.body == b""


async def test_an_idle_connection_the_upstream_closed_is_not_reused() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await head_of(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()  # then close: the keep-alive connection dies while idle

    async with server(script) as (pool, conns):
        assert (await pool.request(get(), None, is_head=False, **LIMITS)).body == b"ok"
        await asyncio.sleep(0.1)
        assert (await pool.request(get(), None, is_head=False, **LIMITS)).body == b"ok"
        assert len(conns) == 2


async def test_connection_close_is_honoured() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await head_of(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await asyncio.sleep(1)

    async with server(script) as (pool, conns):
        for _ in range(2):
            assert (await pool.request(get(), None, is_head=False, **LIMITS)).body == b"ok"
        assert len(conns) == 2


@pytest.mark.parametrize(
    ("sent", "partial"), [(b"", False), (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", True)]
)
async def test_a_connection_dropped_mid_exchange_says_how_far_it_got(sent: bytes, partial: bool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await head_of(reader)
        writer.write(sent)
        await writer.drain()

    async with server(script) as (pool, _):
        with pytest.raises(http1.Disconnected) as caught:
            await pool.request(get(), None, is_head=False, **LIMITS)
    assert caught.value.partial is partial and caught.value.reused is False


async def test_a_silent_upstream_times_out_on_read() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await head_of(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")  # then nothing more
        await asyncio.sleep(3)

    async with server(script) as (pool, _):
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(http1.ReadTimeout):
            await pool.request(get(), None, is_head=False, **{**LIMITS, "read_timeout": 0.3})
        assert 0.25 < loop.time() - started < 1.5


async def test_the_total_timeout_bounds_a_trickling_upstream() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await head_of(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(100):  # a byte every 50 ms: never quiet for the read timeout
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    async with server(script) as (pool, _):
        with pytest.raises(http1.ReadTimeout):
            await pool.request(get(), None, is_head=False, **{**LIMITS, "read_timeout": 0.3, "total_timeout": 0.6})


async def test_refused_connections_and_garbage_are_errors_of_their_own() -> None:
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    pool = http1.Pool("http", "127.0.0.1", port, limit=2)
    with pytest.raises(http1.ConnectError) as caught:
        await pool.request(get(), None, is_head=False, **LIMITS)
    assert "refused" in caught.value.strerror.lower()
    assert pool.open_connections == 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await head_of(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await asyncio.sleep(1)

    async with server(script) as (pool2, _):
        with pytest.raises(http1.ProtocolError):
            await pool2.request(get(), None, is_head=False, **LIMITS)


async def test_the_pool_limit_queues_callers_and_times_them_out() -> None:
    release = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await head_of(reader)
            await release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async with server(script) as (pool, conns):
        pool.limit = 1
        first = asyncio.ensure_future(pool.request(get(), None, is_head=False, **LIMITS))
        await asyncio.sleep(0.05)
        with pytest.raises(http1.ConnectTimeout):  # no free connection within the connect timeout
            await pool.request(get(), None, is_head=False, **{**LIMITS, "connect_timeout": 0.1})
        second = asyncio.ensure_future(pool.request(get(), None, is_head=False, **LIMITS))
        await asyncio.sleep(0.05)
        release.set()
        assert [r.body for r in await asyncio.gather(first, second)] == [b"ok", b"ok"]
        assert len(conns) == 1 and pool.open_connections == 1


def test_line_breaks_in_headers_are_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        http1.render("GET", "/", "h", {"Authorization": "Bearer x\r\nX-Evil: 1"}, None)
    with pytest.raises(ValueError):
        http1.render("GET", "/", "h", {"X-Bad\nName": "v"}, None)


async def test_tls_upstreams_are_verified() -> None:
    """Real upstreams are HTTPS: the pool speaks TLS and refuses a certificate it cannot verify."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await head_of(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = srv.sockets[0].getsockname()[1]
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    good = http1.Pool("https", "127.0.0.1", port, limit=2, ssl_context=trusting)
    stranger = http1.Pool("https", "127.0.0.1", port, limit=2)  # the system's CAs: ours is not one of them
    try:
        assert (await good.request(get(), None, is_head=False, **LIMITS)).body == b"secure"
        with pytest.raises(http1.ConnectError, match="TLS"):
            await stranger.request(get(), None, is_head=False, **LIMITS)
    finally:
        await good.close()
        await stranger.close()
        srv.close()
        await srv.wait_closed()
