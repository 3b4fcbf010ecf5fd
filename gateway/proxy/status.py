"""Upstream statuses mapped once: 404/410 (a missing entity or a gone route), every other failure, ``shape``.

A 401 is a credential the upstream does not accept (renew it: ``credentials_rejected``); a 403
is a credential it accepts but that may not make this call, such as a PostHog key without the
route's scope (grant it: ``forbidden``): two diagnoses, two alerts, two fixes.

Nothing here counts a failure: the error leaves the route's pipeline through its ``account``
stage (gateway.pipeline.account), which counts it once and marks the route down.
"""

from __future__ import annotations

from gateway import jsonio, retry_after
from gateway.config import Route, Target, Upstream
from gateway.errors import BadGateway, GatewayError, NotFound, ServiceUnavailable, UpstreamError, client_error_for
from gateway.methods import SAFE as _SAFE_METHODS
from gateway.redact import Redactor
from gateway.shape import check_response
from gateway.upstream import UpstreamResponse
from gateway.verdict import Ask, GoneCheck

#: the ``upstream_errors`` kind of an upstream 403 (no stale copy stands in: gateway.cache)
FORBIDDEN_KIND = "forbidden"


async def not_there(
    upstream: Upstream,
    route: Route,
    index: int,
    resp: UpstreamResponse,
    redact: Redactor,
    gone_check: GoneCheck | None,
    ask: Ask,
) -> GatewayError:
    """A 404/410: the entity the client named is missing, or the upstream route is gone.

    Only a target path carrying an id from the stable path can mean a missing entity, and
    even then only if the route's probe sample (a known-existing entity) is found (gateway.verdict).
    """
    target = route.targets[index]
    where = f"{target.method} {target.path.raw}"
    if target.path.names & route.path.names:
        why = None
        if gone_check is not None:
            why = await gone_check.route_gone(route.name, where, ask)
        if why is None:
            detail = redact(upstream_message(resp.body), fresh=True)
            return NotFound(detail or "not found upstream", route=route.name)
        message = f"upstream {upstream.name!r} {why}: {where} is gone"
    else:
        # nothing the client named is in the path: no entity can be missing, the route is
        message = f"upstream {upstream.name!r} no longer serves {where} ({resp.status})"
    return BadGateway(
        message + " - the upstream route may have moved; check routes.yaml",
        kind="4xx",
        code="upstream_route_gone",
        route=route.name,
    )


def check_status(upstream: Upstream, route: Route, target: Target, resp: UpstreamResponse, redact: Redactor) -> None:
    """Any status but a success (or an expected redirect) raised as the gateway error it means."""
    status = resp.status
    if status < 300 or status == 304 or (resp.location is not None and 300 <= status < 400):
        return
    detail = redact(upstream_message(resp.body), fresh=True)
    name = upstream.name
    exc: Exception
    if status == 401:  # not authenticated: the credential is missing, expired or revoked
        exc = BadGateway(
            f"upstream {name!r} rejected the gateway's credentials ({status})"
            + (f": {detail}" if detail else "")
            + "; renew them",
            kind="credentials_rejected",
            code="upstream_auth_rejected",
            route=route.name,
        )
    elif status == 403:  # authenticated, not allowed: renewing a working credential would not help
        exc = BadGateway(
            f"upstream {name!r} refused this call with the configured credential ({status}): it lacks a"
            " permission or scope this route needs" + (f" ({detail})" if detail else "") + "; grant it",
            kind=FORBIDDEN_KIND,
            code="upstream_forbidden",
            route=route.name,
        )
    elif status == 429:
        retry = retry_after.header_value(resp.headers, resp.body)
        exc = ServiceUnavailable(
            f"upstream {name!r} is rate limiting the gateway" + (f": {detail}" if detail else ""),
            kind="throttled",
            code="upstream_rate_limited",
            route=route.name,
            headers={"Retry-After": retry} if retry else None,
        )
    elif status in (400, 422) and route.method in _SAFE_METHODS:
        # every parameter of a read was built from validated input: the mapping no longer fits
        exc = BadGateway(
            f"upstream {name!r} rejected {target.method} {target.path.raw} ({status})"
            + (f": {detail}" if detail else "")
            + " - the gateway built every parameter from validated input, so the upstream API"
            " changed; check routes.yaml",
            kind="4xx",
            code="upstream_rejected",
            route=route.name,
        )
    elif status in (400, 409, 422):
        raise client_error_for(status)(
            detail or f"upstream {name!r} refused the request ({status})",
            code="upstream_rejected",
            route=route.name,
        )
    elif 300 <= status < 400:
        exc = BadGateway(
            f"upstream {name!r} answered an unexpected redirect ({status})",
            kind="redirect",
            code="bad_redirect",
            route=route.name,
        )
    elif status < 500:
        exc = BadGateway(
            f"upstream {name!r} refused {target.method} {target.path.raw} ({status})"
            + (f": {detail}" if detail else ""),
            kind="4xx",
            code="upstream_refused",
            route=route.name,
        )
    else:
        exc = BadGateway(
            f"upstream {name!r} failed with {status}" + (f": {detail}" if detail else ""),
            kind="5xx",
            code="upstream_failed",
            route=route.name,
        )
    assert isinstance(exc, UpstreamError)
    try:
        raise exc
    finally:
        del exc  # the traceback holds this frame: a local naming the error would make a cycle keeping resp


def check_shape(route: Route, resp: UpstreamResponse) -> None:
    """The route's declared status and content type (``shape:``), on every successful answer."""
    assert route.shape is not None
    check_response(
        route.shape, resp.status, resp.headers.get("Content-Type", ""), resp.location is not None, route.name
    )


def upstream_message(body: bytes) -> str:
    """The human part of an upstream error body (PostHog ``detail``, Observable ``errors``)."""
    try:
        data = jsonio.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return ""
    if isinstance(data, dict):
        for key in ("detail", "message", "error"):
            if isinstance(data.get(key), str):
                return str(data[key])[:500]
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            msg = errors[0].get("message")
            if isinstance(msg, str):
                return msg[:500]
    return ""
