"""What each part of a gateway request costs, by serving the gateway with that one part taken out.

``python -m bench.breakdown --instructions --only cache-hit --ablate all`` runs the variant once as
it is and once per part below, each replaced by nothing in the served process, and prints what the
part cost.  The answer changes (no ETag, no access line...): this measures, it does not serve. It
shows whether any one feature is worth dropping for speed; the parts left when all are out (the
route match, the coroutine layers, the stored answer's ``Response``, writing its headers) are the
rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: the environment variable that carries the parts to take out into the served process
ENV = "ROUTEGATE_BENCH_ABLATE"


def _accounting() -> None:
    from gateway.server import framing

    framing._account = lambda *args: None


def _checks() -> None:
    from gateway.server import framing

    framing._checked = lambda gateway, request: None


def _request_id() -> None:
    from gateway.server import framing

    framing._request_id = lambda request: "0" * 32


def _private() -> None:
    from gateway.server import framing

    framing.mark_private = lambda *args, **kwargs: None  # type: ignore[attr-defined]  # imported there by name


def _validator() -> None:
    import gateway.proxy

    gateway.proxy.STAGES = tuple((n, s) for n, s in gateway.proxy.STAGES if n != "validator")


def _verdict() -> None:
    from gateway.cache.core import ResponseCache

    ResponseCache._count = lambda self, route, result, trace: None  # type: ignore[method-assign]


def _cache_key() -> None:
    from gateway.cache.core import ResponseCache

    made = ResponseCache._key
    kept: list[Any] = []

    def key(self: ResponseCache, *args: Any) -> Any:
        if not kept:
            kept.append(made(self, *args))
        return kept[0]

    ResponseCache._key = key  # type: ignore[method-assign,assignment]


#: name -> (what is taken out, how)
PARTS: dict[str, tuple[str, Callable[[], None]]] = {
    "accounting": ("the two request metrics and the access line", _accounting),
    "checks": ("the request-line, size, Host and Origin checks", _checks),
    "request-id": ("the request id (a constant instead)", _request_id),
    "private": ("Cache-Control/Vary for caches in front", _private),
    "validator": ("the ETag / If-None-Match stage", _validator),
    "cache-verdict": ("the cache verdict's counter and access-line field", _verdict),
    "cache-key": ("the cache key (one key, made once)", _cache_key),
}


def apply(names: str) -> None:
    """Take out each comma-separated part (in the served process, before the app is built)."""
    for name in filter(None, names.split(",")):
        PARTS[name][1]()
