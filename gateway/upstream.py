"""The upstream HTTP client: pooled keep-alive connections, bounded reads, redirects by hand.

The wire work is aiohttp's client (one pooled ``ClientSession`` per upstream).
Redirects are never left to it: the gateway must see ``Location`` (the module
version lives there), refuse hops to other hosts (no open proxy), and stop loops.
Every transport failure is mapped here, once, onto the gateway's error tree, each
with a bounded ``kind`` for metrics.
"""

from __future__ import annotations

import asyncio
import functools
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from gateway import __version__
from gateway.buffers import BufferBudget, Reservation
from gateway.config import Upstream
from gateway.errors import BadGateway, GatewayTimeout, UpstreamError
from gateway.metrics import Metrics
from gateway.resilience import Resilience

USER_AGENT = f"routegate/{__version__}"
#: methods that always carry a Content-Length, 0 when there is no body (as browsers and aiohttp do)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_LARGE_BODY = 1 << 20
#: the most loaded Upstream objects whose sessions are remembered by identity
_MEMO_SIZE = 256


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL
    #: the absolute redirect target when a 3xx was reported rather than followed
    location: URL | None
    elapsed: float
    #: a 2xx asked for with ``stream=True``: the body is not read, the caller relays and releases it
    stream: aiohttp.ClientResponse | None = None
    #: the body's bytes as counted against server.max_buffered_bytes (gateway.buffers): given back when
    #: this answer is freed, so the count is what is really held
    held: Reservation | None = None

    def __del__(self) -> None:
        if self.held is not None:
            self.held.close()


class _TurnReport:
    """A gauge set to the latest value once per turn of the event loop, not at every change.

    The buffered-bytes total changes two or three times per upstream call; a gauge set
    takes a lock (and, with ``--workers``, writes a memory-mapped file).  A scrape sees the
    total as of the end of the last turn, which is what it is between turns.
    """

    __slots__ = ("_queued", "_set", "_value")

    def __init__(self, set_value: Callable[[float], None]) -> None:
        self._set = set_value
        self._value = 0
        self._queued = False

    def __call__(self, value: int) -> None:
        self._value = value
        if self._queued:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nothing would flush it later
            self._set(value)
            return
        self._queued = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._queued = False
        self._set(self._value)


class UpstreamClient:
    """One pooled ``aiohttp.ClientSession`` per upstream, for the life of the process.

    Every exchange (each redirect hop) goes through ``resilience``: retries, the
    upstream's circuit breaker and the per-credential request budget.
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._sessions: dict[tuple[str, URL, int], aiohttp.ClientSession] = {}
        #: each loaded Upstream's session, by the object's id (kept beside it: an id is reused only once
        #: the object is gone): one dict lookup per call instead of hashing the key's URL
        self._by_upstream: dict[int, tuple[Upstream, aiohttp.ClientSession]] = {}
        self.resilience = Resilience(metrics)
        #: the cap on answer bytes buffered across requests in flight (``server.max_buffered_bytes``)
        self.buffers = BufferBudget(report=_TurnReport(metrics.buffered_bytes.set) if metrics is not None else None)

    def _session(self, upstream: Upstream) -> aiohttp.ClientSession:
        known = self._by_upstream.get(id(upstream))
        if known is not None and known[0] is upstream:
            return known[1]
        session = self._session_for(upstream)
        if len(self._by_upstream) >= _MEMO_SIZE:  # reloads make new Upstream objects: forget the old ones
            self._by_upstream.clear()
        self._by_upstream[id(upstream)] = (upstream, session)
        return session

    def _session_for(self, upstream: Upstream) -> aiohttp.ClientSession:
        """The session of the upstream's name, base URL and pool size (a reload keeps it while those stay)."""
        key = (upstream.name, upstream.base_url, upstream.max_connections)
        session = self._sessions.get(key)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=upstream.max_connections,
                limit_per_host=upstream.max_connections,
                keepalive_timeout=30,
                ttl_dns_cache=300,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # never carry one client's cookies to another
                # identity: the body is read whole and checked, compressing it would only cost CPU on both
                # sides (a compressed answer is still decompressed); a header, not skip_auto_headers, which
                # aiohttp re-processes on every request
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                auto_decompress=True,
            )
            self._sessions[key] = session
        return session

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        self._by_upstream.clear()
        for s in sessions:
            await s.close()

    async def send(
        self,
        upstream: Upstream,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        headers: dict[str, str],
        body: bytes | None,
        *,
        follow: bool,
        route: str,
        stream: bool = False,
    ) -> UpstreamResponse:
        """One logical upstream call, following same-origin redirects if asked.

        ``headers`` come checked where they were made: none holds a line break (the config's at load,
        a credential when resolved, gateway.auth; the request id by its pattern).

        ``stream``: a 2xx answer comes back unread (``UpstreamResponse.stream``); every other
        answer is read as usual.
        """
        url = _join(upstream.base_url, path, query)
        seen: set[str] = set()  # filled on the first redirect: most calls never need it
        started = time.perf_counter()
        for _hop in range(upstream.max_redirects + 1):
            once = functools.partial(self._once, upstream, method, url, headers, body, route, stream)
            resp = await self.resilience.run(upstream, method, route, headers, once)
            if resp.status not in (301, 302, 303, 307, 308):
                resp.elapsed = time.perf_counter() - started
                return resp
            raw_location = resp.headers.get("Location")
            if not raw_location:
                raise BadGateway(
                    f"upstream {upstream.name!r} answered {resp.status} without a Location",
                    kind="redirect",
                    code="bad_redirect",
                    route=route,
                )
            try:
                target = url.join(URL(raw_location))
            except ValueError:
                raise BadGateway(
                    f"upstream {upstream.name!r} redirected to an invalid Location",
                    kind="redirect",
                    code="bad_redirect",
                    route=route,
                ) from None
            if not seen:
                seen.add(str(url))
            if target.origin() != upstream.base_url.origin():
                raise BadGateway(
                    f"upstream {upstream.name!r} redirected to another host ({target.host}); not followed",
                    kind="redirect",
                    code="redirect_off_host",
                    route=route,
                )
            if not follow:
                resp.location = target
                resp.elapsed = time.perf_counter() - started
                return resp
            if str(target) in seen:
                raise BadGateway(
                    f"upstream {upstream.name!r} redirect loop at {target.path}",
                    kind="redirect",
                    code="redirect_loop",
                    route=route,
                )
            seen.add(str(target))
            url = target
            if resp.status == 303 or (resp.status in (301, 302) and method != "HEAD"):
                method, body = "GET", None
        raise BadGateway(
            f"upstream {upstream.name!r} redirected more than {upstream.max_redirects} times",
            kind="redirect",
            code="redirect_loop",
            route=route,
        )

    async def _once(
        self,
        upstream: Upstream,
        method: str,
        url: URL,
        headers: dict[str, str],
        body: bytes | None,
        route: str,
        stream: bool = False,
    ) -> UpstreamResponse:
        t = upstream.timeouts
        timeout = _timeout(t.total, t.connect, t.read)
        data: bytes | io.BytesIO | None = body if body is not None else (b"" if method in _BODY_METHODS else None)
        if body is not None and len(body) > _LARGE_BODY:
            data = io.BytesIO(body)  # aiohttp streams a file-like body instead of warning about bytes
        held = Reservation(self.buffers)  # the body's bytes, counted against server.max_buffered_bytes
        answer: UpstreamResponse | None = None  # once made, it holds the bytes until it is freed
        # one try; retrying (or not: a POST that may have arrived is never re-sent) is resilience's call
        try:
            resp = await self._session(upstream).request(
                method, url, headers=headers, data=data, allow_redirects=False, timeout=timeout
            )
            relayed = False
            try:
                if stream and 200 <= resp.status < 300 and resp.status != 204:
                    relayed = True
                    return UpstreamResponse(resp.status, resp.headers, b"", url, None, 0.0, stream=resp)
                if _declared(resp, upstream, route, held):
                    payload = await resp.read()
                else:
                    payload = await _read_bounded(resp, upstream, route, held)
                answer = UpstreamResponse(resp.status, resp.headers, payload, url, None, 0.0, held=held)
                return answer
            finally:
                if not relayed:  # what ``release`` does, without a coroutine of its own on every call
                    resp.release()
                    await resp.wait_for_close()
        except aiohttp.ServerDisconnectedError:
            raise BadGateway(
                f"upstream {upstream.name!r} closed the connection without answering",
                kind="reset",
                code="upstream_reset",
                route=route,
            ) from None
        except aiohttp.ClientPayloadError:
            raise BadGateway(
                f"upstream {upstream.name!r} broke off the response body",
                kind="reset",
                code="upstream_reset",
                route=route,
            ) from None
        except aiohttp.ConnectionTimeoutError:
            # nothing was sent yet: the connection (or a free pool slot) never came
            raise GatewayTimeout(
                f"could not connect to upstream {upstream.name!r} in time", kind="connect_timeout", route=route
            ) from None
        except TimeoutError:  # aiohttp's read/total timeouts subclass it
            raise GatewayTimeout(f"upstream {upstream.name!r} did not answer in time", route=route) from None
        except aiohttp.ClientConnectorError as exc:
            raise BadGateway(
                f"cannot connect to upstream {upstream.name!r} ({exc.os_error.strerror or 'refused'})",
                kind="connect",
                code="upstream_unreachable",
                route=route,
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise BadGateway(
                f"upstream {upstream.name!r} failed: {type(exc).__name__}",
                kind="reset",
                code="upstream_failed",
                route=route,
            ) from None
        finally:
            if answer is None:
                held.close()  # a failed read gives its bytes back at once (its chunks are dropped)


async def release(resp: aiohttp.ClientResponse) -> None:
    """What leaving ``async with session.request(...)`` does: the connection goes back (or closes, if unread)."""
    resp.release()
    await resp.wait_for_close()


@functools.lru_cache(maxsize=64)
def _timeout(total: float, connect: float, read: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total, connect=connect, sock_read=read)


def _declared(resp: aiohttp.ClientResponse, upstream: Upstream, route: str, held: Reservation) -> bool:
    """Whether the body can be read whole: a declared length within ``max_response_bytes`` (larger is
    refused at once), counted in ``held`` before any byte is read; the declared length is the most
    that can arrive.  A compressed or undeclared body is read by ``_read_bounded`` instead.

    A plain call, not a coroutine: most answers declare their length, and this is on every call.
    """
    length = resp.content_length
    if length is None:
        return False
    if length > upstream.max_response_bytes:
        raise _too_large(upstream, route)
    if "Content-Encoding" in resp.headers:
        return False
    held.take(length, upstream.name, route)
    return True


async def _read_bounded(resp: aiohttp.ClientResponse, upstream: Upstream, route: str, held: Reservation) -> bytes:
    """The whole body, refusing more than ``max_response_bytes`` (checked while reading), where no length
    was declared or the body is compressed.

    Every byte is counted in ``held`` before it is kept: past the process-wide cap the
    read stops with a 503 (``gateway.buffers``).
    """
    limit = upstream.max_response_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            chunks.clear()  # the traceback keeps this frame as long as the error lives
            del chunk
            raise _too_large(upstream, route)
        try:
            held.take(len(chunk), upstream.name, route)
        except UpstreamError:
            chunks.clear()
            del chunk
            raise
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(upstream: Upstream, route: str) -> BadGateway:
    return BadGateway(
        f"upstream {upstream.name!r} response is larger than {upstream.max_response_bytes} bytes",
        kind="too_large",
        code="upstream_too_large",
        route=route,
    )


def _join(base: URL, path: str, query: Sequence[tuple[str, str]]) -> URL:
    """Base URL (with any path prefix) + an already-encoded path; never re-normalised."""
    url = _joined(base, path) if len(path) <= 256 else _join_path(base, path)  # memory stays bounded
    if not query:
        return url
    return URL(f"{url}?{urlencode(list(query), quote_via=quote)}", encoded=True)


def _join_path(base: URL, path: str) -> URL:
    return URL(f"{base.scheme}://{base.raw_authority}{base.raw_path.rstrip('/')}{path}", encoded=True)


_joined = functools.lru_cache(maxsize=1024)(_join_path)
