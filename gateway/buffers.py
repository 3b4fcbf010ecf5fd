"""A process-wide cap on upstream answer bytes held in memory at once.

``max_response_bytes`` bounds one answer; without a cap across requests, N concurrent
large answers cost N times that (16 answers once reached 914 MB in a 512 Mi pod).  The
upstream client takes each chunk from the ``BufferBudget`` before it keeps it, and the
bytes go back when the answer object is freed (its ``__del__``), so the count is
what is really held: a finished request's answers, an ``all=true`` run's earlier pages, a
pass-through body once it is sent.  A read that would pass the cap stops at once and the
request is answered 503 ``upstream_buffer_full`` with ``Retry-After``: a busy gateway
sheds load instead of being OOM-killed with every request in flight.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.errors import ServiceUnavailable

#: the error kind (metrics label) of a request refused because the cap was reached
KIND = "buffer_full"
#: seconds a refused caller is told to wait: buffered answers are done within about that
RETRY_AFTER = "1"


class BufferBudget:
    """Bytes of upstream answers held by the process, against ``limit``."""

    def __init__(self, limit: int | None = None, report: Callable[[int], None] | None = None) -> None:
        #: None: no cap (only ``max_response_bytes`` per answer)
        self.limit = limit
        self.used = 0
        #: the most ever held at once
        self.peak = 0
        #: told the new total at each change (the gateway_upstream_buffered_bytes gauge)
        self._report = report

    def take(self, size: int, upstream: str, route: str) -> None:
        """Count ``size`` more bytes, or raise 503 (nothing counted) if the cap would be passed."""
        if self.limit is not None and self.used + size > self.limit:
            raise ServiceUnavailable(
                f"the gateway already holds {self.used} bytes of upstream answers (server.max_buffered_bytes: "
                f"{self.limit}); the answer of upstream {upstream!r} was not read, retry in {RETRY_AFTER}s",
                kind=KIND,
                code="upstream_buffer_full",
                route=route,
                headers={"Retry-After": RETRY_AFTER},
            )
        self.used += size
        self.peak = max(self.peak, self.used)
        if self._report is not None:
            self._report(self.used)

    def give_back(self, size: int) -> None:
        self.used -= size
        if self._report is not None:
            self._report(self.used)


class Reservation:
    """The bytes of one answer: given back on ``close``, by the read that failed or by the answer
    holding them when it is freed (gateway.upstream.UpstreamResponse)."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: BufferBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, size: int, upstream: str, route: str) -> None:
        self.budget.take(size, upstream, route)
        self.held += size

    def close(self) -> None:
        held, self.held = self.held, 0
        if held:  # an empty body took nothing: nothing to give back or report
            self.budget.give_back(held)
