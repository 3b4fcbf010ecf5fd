"""One exception tree for everything the gateway answers with an error.

Every failure on the request path is a ``GatewayError`` carrying the HTTP status, a
stable machine-readable ``code`` and a human message; the server turns it into the
JSON body ``{"error": {"code", "message", "route"}}``.  Lower layers (aiohttp,
json, the config) are mapped into this tree where they are caught, never later::

    GatewayError
    ├── ClientError            4xx: the caller can fix the request
    │   ├── BadRequest           400
    │   ├── Unauthorized         401
    │   ├── Forbidden            403
    │   ├── NotFound             404
    │   ├── MethodNotAllowed     405 (carries Allow)
    │   ├── RequestTimeout       408 (the body did not arrive in time)
    │   ├── MisdirectedRequest   421 (a Host this gateway does not serve)
    │   ├── Conflict             409
    │   ├── PayloadTooLarge      413
    │   ├── UnsupportedMediaType 415
    │   ├── Unprocessable        422 (carries every problem)
    │   └── TooManyRequests      429 (carries Retry-After)
    └── UpstreamError          5xx: the upstream or the gateway's wiring to it
        ├── BadGateway           502
        ├── ServiceUnavailable   503
        ├── GatewayTimeout       504
        └── CollectionChanged    409 (the upstream's list moved under a paged walk: start again)
"""

from __future__ import annotations

from typing import Any

#: longest message and most ``details`` entries an error body carries (a hostile query must not make it big)
MAX_MESSAGE = 2000
MAX_DETAILS = 50


class GatewayError(Exception):
    status = 500
    default_code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        route: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.route = route
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON error body; message and details are capped so no input can make it large."""
        message = self.message if len(self.message) <= MAX_MESSAGE else self.message[:MAX_MESSAGE] + "..."
        err: dict[str, Any] = {"code": self.code, "message": message, "route": self.route}
        if self.details is not None:
            details = self.details
            if isinstance(details, list) and len(details) > MAX_DETAILS:
                details = [*details[:MAX_DETAILS], f"... and {len(details) - MAX_DETAILS} more"]
            err["details"] = details
        return {"error": err}


class ClientError(GatewayError):
    status = 400
    default_code = "bad_request"


class BadRequest(ClientError):
    status = 400
    default_code = "bad_request"


class Unauthorized(ClientError):
    status = 401
    default_code = "unauthorized"


class Forbidden(ClientError):
    status = 403
    default_code = "forbidden"


class NotFound(ClientError):
    status = 404
    default_code = "not_found"


class MethodNotAllowed(ClientError):
    status = 405
    default_code = "method_not_allowed"


class RequestTimeout(ClientError):
    status = 408
    default_code = "request_timeout"


class MisdirectedRequest(ClientError):
    status = 421
    default_code = "host_not_allowed"


class Conflict(ClientError):
    status = 409
    default_code = "conflict"


class PayloadTooLarge(ClientError):
    status = 413
    default_code = "payload_too_large"


class UnsupportedMediaType(ClientError):
    status = 415
    default_code = "unsupported_media_type"


class UriTooLong(ClientError):
    status = 414
    default_code = "uri_too_long"


class HeadersTooLarge(ClientError):
    status = 431
    default_code = "headers_too_large"


class Unprocessable(ClientError):
    status = 422
    default_code = "validation_failed"


class TooManyRequests(ClientError):
    status = 429
    default_code = "rate_limited"


class UpstreamError(GatewayError):
    status = 502
    default_code = "upstream_error"
    #: bounded label for metrics: timeout, connect, 4xx, 5xx, redirect, shape, credentials, ...
    kind = "error"

    def __init__(self, message: str, *, kind: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        if kind is not None:
            self.kind = kind


class BadGateway(UpstreamError):
    status = 502
    default_code = "bad_gateway"


class ServiceUnavailable(UpstreamError):
    status = 503
    default_code = "service_unavailable"


class GatewayTimeout(UpstreamError):
    status = 504
    default_code = "upstream_timeout"
    kind = "timeout"


class CollectionChanged(UpstreamError):
    """The upstream's collection moved under a paged walk (an item added, edited or removed before the
    page asked for): serving the page would miss or repeat an item (gateway.pagination.offset).  An
    upstream event, so it is counted with the route's upstream errors, but neither the caller's mistake
    nor the route breaking (``kind`` ``shifted`` is in gateway.proxy.NOT_DOWN): the walk starts again."""

    status = 409
    default_code = "collection_changed"
    kind = "shifted"


_BY_STATUS: dict[int, type[GatewayError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        RequestTimeout,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        Unprocessable,
        TooManyRequests,
    )
}


def client_error_for(status: int) -> type[GatewayError]:
    """The ClientError subclass for an upstream 4xx we pass on to the caller."""
    return _BY_STATUS.get(status, BadRequest)
