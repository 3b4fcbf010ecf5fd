"""A process-wide cap on upstream answer bytes held in memory by the requests in flight.

``max_response_bytes`` bounds one answer; without a cap across requests, N concurrent
large answers cost N times that (16 answers once reached 914 MB in a 512 Mi pod).  Each
stable request gets a ``Ledger`` (a context variable, so every upstream call the request
makes, pages and cache fills included, draws on it); the upstream client takes bytes
from it as they arrive, and the ledger gives them all back when the request ends, when
its answers (and what was parsed from them) are freed.  A request that would go over the
cap is answered 503 ``upstream_buffer_full`` with ``Retry-After``: a busy gateway sheds
load instead of being OOM-killed with every request in flight.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from gateway.errors import ServiceUnavailable

#: the error kind (metrics label) of a request refused because the cap was reached
KIND = "buffer_full"
#: seconds a refused caller is told to wait: buffered answers are done within about that
RETRY_AFTER = "1"


class BufferBudget:
    """Bytes of upstream answers buffered by all requests in flight, against ``limit``."""

    def __init__(self, limit: int | None = None) -> None:
        #: None: no cap (only ``max_response_bytes`` per answer)
        self.limit = limit
        self.used = 0
        #: the most ever held at once (for tests and /status)
        self.peak = 0

    def take(self, size: int, upstream: str, route: str) -> None:
        """Count ``size`` more bytes, or raise 503 (nothing counted) if the cap would be passed."""
        if self.limit is not None and self.used + size > self.limit:
            raise ServiceUnavailable(
                f"the gateway already buffers {self.used} bytes of upstream answers (server.max_buffered_bytes: "
                f"{self.limit}); the answer of upstream {upstream!r} was not read, retry in {RETRY_AFTER}s",
                kind=KIND,
                code="upstream_buffer_full",
                route=route,
                headers={"Retry-After": RETRY_AFTER},
            )
        self.used += size
        self.peak = max(self.peak, self.used)

    def give_back(self, size: int) -> None:
        self.used -= size


class Ledger:
    """One request's share of the budget, all given back at once when the request ends."""

    __slots__ = ("budget", "closed", "held")

    def __init__(self, budget: BufferBudget) -> None:
        self.budget = budget
        self.held = 0
        self.closed = False

    def take(self, size: int, upstream: str, route: str) -> None:
        self.budget.take(size, upstream, route)
        if self.closed:
            # a cache fill that outlived the request that started it: checked, but nobody would give it back
            self.budget.give_back(size)
        else:
            self.held += size

    def close(self) -> None:
        held, self.held, self.closed = self.held, 0, True
        self.budget.give_back(held)


_LEDGER: ContextVar[Ledger | None] = ContextVar("routegate_buffer_ledger", default=None)


def current() -> Ledger | None:
    return _LEDGER.get()


@contextlib.contextmanager
def request_scope(budget: BufferBudget) -> Iterator[Ledger]:
    """Upstream answers read inside the block are counted until it ends (nested scopes share the outer one)."""
    outer = _LEDGER.get()
    if outer is not None:
        yield outer
        return
    ledger = Ledger(budget)
    token = _LEDGER.set(ledger)
    try:
        yield ledger
    finally:
        _LEDGER.reset(token)
        ledger.close()
