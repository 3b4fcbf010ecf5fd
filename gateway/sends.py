"""One credential's send log, and its hand-over between shared (Redis) and local pacing.

Split from gateway.resilience, which paces calls with it: the log holds the slots this
process took (some in the near future, reserved), and ``handover`` carries a credential's
windows over when sharing stops or resumes, so the combined calls stay under the budget.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from gateway.config import Upstream
from gateway.credential_id import credential_fingerprint
from gateway.shared import SharedState, local_share


def credential_id(upstream: Upstream, headers: Mapping[str, str]) -> str:
    """Which credential a call uses, as its fingerprint (the value itself is never kept)."""
    if upstream.auth is None:
        return ""
    names = ("Authorization", "Cookie", *(n for n, _ in upstream.auth.headers))
    return credential_fingerprint({name: headers[name] for name in names if headers.get(name)})


class Sends:
    """One credential's send log (reserved slots may lie in the near future) and upstream block."""

    __slots__ = ("blocked_until", "epoch", "grace_until", "phantom", "seed", "shared_at", "times")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.blocked_until = 0.0
        #: shared pacing: the SharedState epoch last seen (-1 for a new log: its first call hands
        #: over, so a credential first called while Redis is away or just back is paced like the
        #: others), the last slot taken in Redis, until when the local share still binds after
        #: sharing resumed, and whether local sends await writing
        self.epoch = -1
        self.shared_at = -math.inf
        self.grace_until = 0.0
        self.seed = False
        #: entries of ``times`` that are no send (``handover``'s padding, slots held while Redis is
        #: asked): they bind here, but are never written to Redis as sends (``seeds``)
        self.phantom: list[float] = []

    def seeds(self, now: float, longest: float) -> list[float]:
        """The sends to write into the shared window on resuming (seconds from ``now``): this
        process's own sends since its last shared slot, once (the caller clears ``seed``).

        Not the padding: written to Redis, one replica's "the others may have used the window"
        would become a full window for every replica, for a whole window.  Not the slots other
        calls hold while they ask Redis: each reserves its own.
        """
        self.phantom = [t for t in self.phantom if t > now - longest]
        left = list(self.phantom)
        out: list[float] = []
        for t in self.times:
            if t <= self.shared_at:
                continue
            if t in left:
                left.remove(t)
            else:
                out.append(t - now)
        return out


def local_slot(times: deque[float], limits: Iterable[tuple[int, float]], at: float) -> float:
    """The earliest send time the log allows under ``limits``, first come first served."""
    if times:
        at = max(at, times[-1])
    for count, per in limits:
        if len(times) >= count:
            at = max(at, times[-count] + per)
    return at


def handover(
    sends: Sends, shared: SharedState, limits: Sequence[tuple[int, float]], now: float, ahead: float = 0.0
) -> None:
    """Sharing stopped or resumed since this credential's last call: carry its windows over.

    Stopped: the other processes may have filled the shared window, and hold slots they
    reserved up to ``ahead`` (the longest a reservation may wait) after Redis last answered,
    none of which this process can see.  So its whole share of the shortest window counts as
    used at the latest such slot could be: no local send until that slot has left the window.
    Counting only this process's own recent sends is not enough (the others' reservations
    are invisible, and a slot held by a call still waiting for Redis is not a send).
    Resumed: the sends made meanwhile are written to Redis first, and the local share still
    binds for one window from when sharing resumed (the other processes may not have written
    theirs yet; whatever they sent locally was sent before they resumed, within about a
    heartbeat of this process, so it has left the window by then).  Counted from the resumption,
    not from this call: a credential first called long after has nothing left to wait for.
    """
    if sends.epoch == shared.epoch:
        return
    sends.epoch = shared.epoch
    count, per = min(local_share(limits, shared.instances), key=lambda limit: limit[1])
    if shared.active:
        sends.grace_until = shared.resumed + per + 1.0  # 1 s: the others resume up to a heartbeat later
        sends.seed = True
        return
    last = max(max(shared.lost, shared.answered) + ahead, sends.shared_at)
    if last > now - per:
        sends.times = deque(sorted([*sends.times, *[last] * count]))
        sends.phantom += [last] * count


def per_text(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds * 1000:g}ms"
