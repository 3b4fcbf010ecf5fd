"""The upstream HTTP client: pooled keep-alive connections, bounded reads, redirects by hand.

The wire work is ``gateway.http1`` (a lean HTTP/1.1 pool; the general aiohttp client
cost more CPU per call than the rest of a proxied request).  Redirects are handled
here: the gateway must see ``Location`` (the module version lives there), refuse
hops to other hosts (no open proxy), and stop loops.  Every transport failure is
mapped here, once, onto the gateway's error tree, each with a bounded ``kind`` for
metrics.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from multidict import CIMultiDictProxy
from yarl import URL

from gateway import __version__, http1
from gateway.config import Upstream
from gateway.errors import BadGateway, GatewayTimeout
from gateway.metrics import Metrics
from gateway.resilience import Resilience

USER_AGENT = f"routegate/{__version__}"
#: methods that always carry a Content-Length, 0 when there is no body (as browsers and aiohttp do)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL
    #: the absolute redirect target when a 3xx was reported rather than followed
    location: URL | None
    elapsed: float


class UpstreamClient:
    """One ``http1.Pool`` of keep-alive connections per upstream, for the life of the process.

    Every exchange (each redirect hop) goes through ``resilience``: retries, the
    upstream's circuit breaker and the per-credential request budget.
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._pools: dict[tuple[str, str, int], http1.Pool] = {}
        self.resilience = Resilience(metrics)

    def _pool(self, upstream: Upstream) -> http1.Pool:
        key = (upstream.name, str(upstream.base_url), upstream.max_connections)
        pool = self._pools.get(key)
        if pool is None:
            base = upstream.base_url
            port = base.port or (443 if base.scheme == "https" else 80)
            pool = http1.Pool(base.scheme, base.raw_host or "", port, limit=upstream.max_connections, keepalive=30.0)
            self._pools[key] = pool
        return pool

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for p in pools:
            await p.close()

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
    ) -> UpstreamResponse:
        """One logical upstream call, following same-origin redirects if asked."""
        url = _join(upstream.base_url, path, query)
        seen: set[str] = set()  # filled on the first redirect: most calls never need it
        started = time.perf_counter()
        for _hop in range(upstream.max_redirects + 1):
            once = functools.partial(self._once, upstream, method, url, headers, body, route)
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
    ) -> UpstreamResponse:
        t = upstream.timeouts
        pool = self._pool(upstream)
        length = len(body) if body is not None else (0 if method in _BODY_METHODS else None)
        try:
            head = http1.render(method, url.raw_path_qs, url.host_port_subcomponent or "", headers, length, USER_AGENT)
        except ValueError:
            raise BadGateway(
                f"a header for upstream {upstream.name!r} holds a line break; nothing was sent",
                kind="config",
                code="bad_upstream_header",
                route=route,
            ) from None
        # one try; retrying (or not: a POST that may have arrived is never re-sent) is resilience's call
        try:
            resp = await pool.request(
                head,
                body,
                is_head=method == "HEAD",
                connect_timeout=t.connect,
                read_timeout=t.read,
                total_timeout=t.total,
                max_body=upstream.max_response_bytes,
            )
        except http1.Disconnected as exc:
            raise BadGateway(
                f"upstream {upstream.name!r} "
                + ("broke off the response body" if exc.partial else "closed the connection without answering"),
                kind="reset",
                code="upstream_reset",
                route=route,
            ) from None
        except http1.ConnectTimeout:
            # nothing was sent yet: the connection (or a free pool slot) never came
            raise GatewayTimeout(
                f"could not connect to upstream {upstream.name!r} in time", kind="connect_timeout", route=route
            ) from None
        except http1.ReadTimeout:
            raise GatewayTimeout(f"upstream {upstream.name!r} did not answer in time", route=route) from None
        except http1.ConnectError as exc:
            raise BadGateway(
                f"cannot connect to upstream {upstream.name!r} ({exc.strerror})",
                kind="connect",
                code="upstream_unreachable",
                route=route,
            ) from None
        except http1.TooLarge:
            raise BadGateway(
                f"upstream {upstream.name!r} response is larger than {upstream.max_response_bytes} bytes",
                kind="too_large",
                code="upstream_too_large",
                route=route,
            ) from None
        except (http1.ProtocolError, OSError) as exc:
            raise BadGateway(
                f"upstream {upstream.name!r} failed: {type(exc).__name__}",
                kind="reset",
                code="upstream_failed",
                route=route,
            ) from None
        return UpstreamResponse(resp.status, resp.headers, resp.body, url, None, 0.0)


def _join(base: URL, path: str, query: Sequence[tuple[str, str]]) -> URL:
    """Base URL (with any path prefix) + an already-encoded path; never re-normalised."""
    prefix = base.raw_path.rstrip("/")
    text = f"{base.scheme}://{base.raw_authority}{prefix}{path}"
    if query:
        text += "?" + urlencode(list(query), quote_via=quote)
    return URL(text, encoded=True)
