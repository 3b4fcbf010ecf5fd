"""A process-wide cap on upstream answer bytes held in memory at once.

``max_response_bytes`` bounds one answer; without a cap across requests, N concurrent
large answers cost N times that (16 answers once reached 914 MB in a 512 Mi pod).  The
upstream client takes each chunk from the ``BufferBudget`` before it keeps it, and the
bytes go back when the answer object is freed (``weakref.finalize``), so the count is
what is really held: a finished request's answers, an ``all=true`` run's earlier pages, a
pass-through body once it is sent.  A read that would pass the cap stops at once and the
request is answered 503 ``upstream_buffer_full`` with ``Retry-After``: a busy gateway
sheds load instead of being OOM-killed with every request in flight.
"""

from __future__ import annotations

import weakref
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
    """The bytes of one answer being read; given back on ``close`` unless handed to the answer."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: BufferBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, size: int, upstream: str, route: str) -> None:
        self.budget.take(size, upstream, route)
        self.held += size

    def hand_to(self, owner: object) -> None:
        """The bytes stay counted until ``owner`` (the object holding the body) is freed.

        A plain weak reference with a callback, kept alive in ``_HANDED`` until it fires: a
        third of what ``weakref.finalize`` costs, once per upstream answer.
        """
        held, self.held = self.held, 0
        if held:
            budget = self.budget

            def freed(ref: weakref.ref[object]) -> None:
                del _HANDED[id(ref)]
                budget.give_back(held)

            ref = weakref.ref(owner, freed)
            _HANDED[id(ref)] = ref

    def close(self) -> None:
        held, self.held = self.held, 0
        if held:  # most answers were handed over: nothing to give back, nothing to report
            self.budget.give_back(held)


#: the weak references ``Reservation.hand_to`` made (by id: a referent need not be hashable), alive until
#: their owner is freed
_HANDED: dict[int, weakref.ref[object]] = {}
