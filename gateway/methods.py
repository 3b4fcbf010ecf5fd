"""The HTTP method sets the gateway reasons with (RFC 9110 §9.2), written once."""

from __future__ import annotations

#: every method a route may declare (routes.yaml ``stable:``/``targets:``, key grants)
METHODS: frozenset[str] = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: safe: read-only by definition, so cacheable, and no cross-origin write check is needed
SAFE: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS"})
#: idempotent: repeating the request has the effect of sending it once, so it may be retried
IDEMPOTENT: frozenset[str] = SAFE | {"PUT", "DELETE"}
#: reads whose answers a shared cache in front could keep (OPTIONS answers are not cached there)
READS: frozenset[str] = frozenset({"GET", "HEAD"})
