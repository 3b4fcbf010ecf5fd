"""What each ``gateway_upstream_errors_total`` kind means for the upstream error ratio.

RoutegateUpstreamErrorRatioHigh and the dashboard's "Upstream error ratio by route" divide the
upstream's failures of calls the gateway made by the calls it made
(``gateway_upstream_requests_total``, which counts no call refused before sending).  A kind
in ``NOT_UPSTREAM_FAILURE`` is left out of that ratio; every kind raised anywhere in the
gateway is classified in docs/observability.md (tests/test_qa3_alerts.py checks both).
"""

from __future__ import annotations

#: refused by the gateway before anything was sent: no credential configured (``credentials``), a
#: header the gateway cannot send (``config``), its own request budget used up (``budget``), a 429
#: hold-off still running (``held_off``), an open circuit breaker (``circuit_open``)
NOT_SENT = frozenset({"credentials", "config", "budget", "held_off", "circuit_open"})
#: the call was made and answered, but the gateway would not hold more answer bytes (gateway.buffers)
SHED = frozenset({"buffer_full"})
#: the data moved under a walk, not the upstream failing: a list that shifted, a walk cut by a target
#: switch, too many tied items for a cursor
DATA_MOVED = frozenset({"shifted", "switched", "ties"})
#: not the upstream failing a call the gateway made: left out of the upstream error ratio
NOT_UPSTREAM_FAILURE = NOT_SENT | SHED | DATA_MOVED
#: the upstream failing a call the gateway made (the rest: timeouts, resets, 4xx, 5xx, 429, shape drift, ...)
UPSTREAM_FAILURE = frozenset(
    {
        "error",
        "timeout",
        "connect",
        "connect_timeout",
        "reset",
        "redirect",
        "too_large",
        "4xx",
        "5xx",
        "credentials_rejected",
        "forbidden",
        "throttled",
        "shape",
    }
)
