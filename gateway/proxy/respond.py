"""The response side: an upstream answer rebuilt as the stable one, or relayed as it arrives (raw routes).

Errors raised here (malformed JSON, a body off its ``shape``) are counted by the route's
``account`` stage, as every upstream failure is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway import jsonio, relay
from gateway.config import Route, Upstream
from gateway.errors import UpstreamError
from gateway.mapping import ShapeDrift, apply_mapping, evaluate
from gateway.shape import check_body
from gateway.upstream import UpstreamResponse

JSON_TYPE = "application/json"


def parse_json(route: Route, resp: UpstreamResponse) -> Any:
    """The upstream body parsed; anything that is not JSON (NaN, too deep, cut off) is a 502."""
    try:
        return jsonio.loads(resp.body)
    except (ValueError, UnicodeDecodeError) as err:
        # the reason only where it helps (too deep, NaN); raised outside the handler: no chained
        # error holding (a copy of) the body
        why = f" ({err})" if isinstance(err, jsonio.TooDeep) or "is not JSON" in str(err) else ""
    exc = ShapeDrift(
        f"upstream {route.upstream!r} returned malformed JSON{why}", code="upstream_bad_json", route=route.name
    )
    try:
        raise exc
    finally:
        del exc  # no cycle error -> traceback -> this frame -> error (it would keep resp until a full gc)


def head(route: Route, resp: UpstreamResponse, params: Mapping[str, Any]) -> tuple[int, dict[str, str]]:
    """The stable status and the declared response headers."""
    spec = route.response
    headers: dict[str, str] = {}
    if spec.headers:
        location = resp.location or resp.url
        for name, expr in spec.headers:
            value = evaluate(expr, {}, params, location, route.name, name)
            if value is not None:
                headers[name] = str(value)
    return spec.status or (resp.status if resp.status < 300 else 200), headers


def rebuild(route: Route, resp: UpstreamResponse, params: Mapping[str, Any]) -> web.StreamResponse:
    """The stable answer built from the upstream's whole answer: mapped, passed through, or raw."""
    spec = route.response
    status, headers = head(route, resp, params)
    if status == 204 or resp.status == 304:
        return web.Response(status=status if resp.status != 304 else 304, headers=headers)
    if spec.raw:
        ctype = resp.headers.get("Content-Type", "application/octet-stream")
        headers["Content-Type"] = ctype
        return _holding(_Relayed(status=status, body=resp.body, headers=headers), resp)
    if spec.item is not None:
        src = parse_json(route, resp) if resp.location is None else {}
        if route.shape is not None and resp.location is None:
            check_body(route.shape, src, route.name)
        data = jsonio.dumps(apply_mapping(spec.item, src, params, resp.location or resp.url, route.name))
    else:
        src = parse_json(route, resp)  # pass-through still must be JSON
        if route.shape is not None:
            check_body(route.shape, src, route.name)
        data = resp.body
    if data is resp.body:
        return _holding(
            _Relayed(status=status, body=data, content_type=JSON_TYPE, charset="utf-8", headers=headers), resp
        )
    return web.Response(status=status, body=data, content_type=JSON_TYPE, charset="utf-8", headers=headers)


async def stream(
    request: web.Request,
    route: Route,
    upstream: Upstream,
    resp: UpstreamResponse,
    params: Mapping[str, Any],
    request_id: str,
) -> tuple[web.StreamResponse, UpstreamError | None]:
    """A raw answer written as it arrives (gateway.relay): one chunk held, not the whole body.

    Returns the response and the failure that cut it short (None: all of it was sent).
    """
    assert resp.stream is not None
    status, headers = head(route, resp, params)
    headers["Content-Type"] = resp.headers.get("Content-Type", "application/octet-stream")
    headers["X-Request-ID"] = request_id  # the response is on the wire before the framing sees it
    return await relay.relay(request, resp.stream, status, headers, upstream, route.name)


class _Relayed(web.Response):
    """A response sending an upstream answer's body as it is.

    The answer (and so its count in server.max_buffered_bytes) lives until the body is
    written, then both are dropped: aiohttp keeps a keep-alive connection's last response
    until that connection's next request, which would hold the body long after it was sent.
    The answer is a plain attribute, not a response key: the mapping's ``pop`` ran several
    Python-level calls per answer.
    """

    #: set by ``_holding`` right after the response is made (no ``__init__`` of its own to pass through)
    _answer: UpstreamResponse | None = None

    async def write_eof(self, data: bytes = b"") -> None:
        try:
            await super().write_eof(data)
        finally:
            self._answer = None
            self._body = None


def _holding(out: _Relayed, answer: UpstreamResponse) -> _Relayed:
    out._answer = answer
    return out
