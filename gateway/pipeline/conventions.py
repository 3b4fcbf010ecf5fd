"""The HTTP conventions clients expect of stable answers, each a stage only where it applies.

* ``validator`` (GET routes): an ``ETag`` from the body; ``If-None-Match`` naming it is
  answered ``304`` without a body, so a client that kept the answer pays no body for it.
* ``preconditions`` (write routes): ``If-Match`` and the other conditional headers are refused
  with a 400, since nothing here or upstream would honour them.
* ``compress`` (collection routes): an ``all=true`` answer is compressed as the client's
  ``Accept-Encoding`` prefers (gzip or deflate, ``q`` weights honoured); pages stay small and plain.
"""

from __future__ import annotations

import hashlib

from aiohttp import web
from aiohttp.web_response import ContentCoding

from gateway.config import Route
from gateway.downstream import vary
from gateway.errors import BadRequest
from gateway.negotiation import weighted
from gateway.pipeline import Exchange, Handler, http

#: answers smaller than this are sent as they are: compressing them saves less than it costs
COMPRESS_MIN_BYTES = 1024
#: headers a 304 repeats from the answer it stands for (RFC 9110 15.4.5) plus the gateway's own
_KEPT_ON_304 = ("ETag", "Cache-Control", "Vary", "Date", "Age", "X-Cache", "Expires", "Content-Location")


def etag_of(body: bytes) -> str:
    """A weak validator of a body: weak, because a compressed copy of the same answer shares it.

    SHA-1 (not for security: a tag only tells bodies apart) runs in hardware, three times as
    fast as blake2b here; 96 of its bits are plenty to tell one entity's versions apart.
    """
    return 'W/"' + hashlib.sha1(body, usedforsecurity=False).hexdigest()[:24] + '"'


def matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 13.1.2): ``*`` or any listed tag equal once ``W/`` is dropped."""
    if if_none_match.strip() == "*":
        return True
    want = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == want for tag in if_none_match.split(","))


def validator(route: Route, inner: Handler) -> Handler | None:
    """ETag / If-None-Match, for GET routes (writes change things: they get no validator)."""
    if route.method != "GET":
        return None

    async def validated(ex: Exchange) -> web.StreamResponse:
        resp = await inner(ex)
        if resp.status != 200 or not isinstance(resp, web.Response):
            return resp
        body = resp.body
        if not isinstance(body, bytes):
            return resp  # errors, streams and relayed bodies carry no validator
        headers = resp.headers
        etag = headers.get("ETag")
        if etag is None:
            etag = headers["ETag"] = etag_of(body)  # a cached entry stored its own
        lines = http(ex).headers.getall("If-None-Match", None)
        if lines is None or not matches(", ".join(lines), etag):  # repeated lines are one list (RFC 9110 5.3)
            return resp
        kept = {name: resp.headers[name] for name in _KEPT_ON_304 if name in resp.headers}
        return web.Response(status=304, headers=kept)

    return validated


#: the conditional request headers (RFC 9110 13.1): on a write, none can be honoured here
_PRECONDITIONS = ("If-Match", "If-None-Match", "If-Unmodified-Since", "If-Modified-Since")


def preconditions(route: Route, inner: Handler) -> Handler | None:
    """A conditional write is refused, never forwarded without its condition (write routes).

    The gateway's ETags are weak validators of its own answers (``If-Match`` compares strongly),
    and the upstreams ignore these headers: forwarding the write without them would make a
    read-modify-write that expects a 412 overwrite someone else's edit.  A 400 says so, and what
    guards a write instead (PostHog's ``version`` with ``content``)."""
    if route.method in ("GET", "HEAD"):
        return None

    async def unconditional(ex: Exchange) -> web.StreamResponse:
        headers = http(ex).headers
        sent = [name for name in _PRECONDITIONS if name in headers]
        if sent:
            raise BadRequest(
                f"{', '.join(sent)} cannot be honoured on a write: the gateway does not check preconditions"
                " for writes and the upstream ignores them; send the write without it (for a PostHog"
                " notebook, `version` with `content` guards against a concurrent edit: a stale one is a 409)",
                code="precondition_unsupported",
                route=route.name,
            )
        return await inner(ex)

    return unconditional


def all_flag(raw: str | None, route: str) -> bool:
    """The one rule for ``all``: absent or ``false`` is a page, ``true`` is everything, anything else
    (``yes``, ``1``, ``TRUE``, empty) is a 400 ``bad_query`` before any upstream call, as the OpenAPI
    enum says.  The collection stage reads it; ``wants_all`` relies on that 400 having been raised."""
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise BadRequest(f"all must be true or false, got {raw!r}", code="bad_query", route=route)


def wants_all(request: web.Request) -> bool:
    """``all=true`` exactly (``all_flag``: any other value never reached an answer worth compressing)."""
    return request.query.get("all") == "true"


#: the codings the gateway compresses with, the one it prefers first when a client weighs both alike
_CODINGS = {"gzip": ContentCoding.gzip, "deflate": ContentCoding.deflate}


def coding_for(accept_encoding: str) -> ContentCoding | None:
    """The coding ``Accept-Encoding`` prefers among gzip and deflate (RFC 9110 12.5.3), None for none.

    aiohttp's own choice is the first coding named anywhere in the header, so ``deflate;q=0, gzip``
    got the deflate the client refused; here ``q`` weights count, ``*`` stands for a coding not
    named, and ties go to gzip (what ``curl --compressed`` and browsers expect first)."""
    weights = dict(weighted(accept_encoding))
    wildcard = weights.get("*", 0.0)
    best, best_q = None, 0.0
    for name, coding in _CODINGS.items():
        q = weights.get(name, wildcard)
        if q > best_q:
            best, best_q = coding, q
    return best


def compress_large(request: web.Request, resp: web.StreamResponse) -> None:
    """Compress ``resp`` as ``Accept-Encoding`` prefers, if it is large enough to gain."""
    if isinstance(resp, web.Response) and isinstance(resp.body, bytes) and len(resp.body) >= COMPRESS_MIN_BYTES:
        vary(resp, "Accept-Encoding")  # the answer depends on the header whether or not it is compressed
        coding = coding_for(request.headers.get("Accept-Encoding", ""))
        if coding is not None:
            resp.enable_compression(coding)


def compress(route: Route, inner: Handler) -> Handler | None:
    """Compression of ``all=true`` answers, for collection routes."""
    if route.pagination is None:
        return None

    async def compressed(ex: Exchange) -> web.StreamResponse:
        resp = await inner(ex)
        request = http(ex)
        if resp.status == 200 and wants_all(request):
            compress_large(request, resp)
        return resp

    return compressed
