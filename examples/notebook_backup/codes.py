"""What each answer of the gateway means to the run: retried, fatal, final, restarted, or refused.

The gateway names every failure with an error code (docs/errors.md); these sets decide what a run does
with each. ``BROKEN_AFTER`` (settings) is how many notebooks of one route may fail before the run stops.
"""

from __future__ import annotations

RETRY_STATUSES = frozenset({500, 502, 503, 504})
#: the gateway's upstream credentials are refused or missing: every request would fail the same way
FATAL_CODES = frozenset({"upstream_auth_rejected", "upstream_credentials_missing"})
#: the route's mapping no longer fits the upstream: retrying does not heal it, an operator's
#: routes.yaml edit and reload does; retried (to give the reload time), and after BROKEN_AFTER
#: notebooks of one route failed with one of these, the run stops
BROKEN_ROUTE_CODES = frozenset(
    {
        "upstream_route_gone",
        "upstream_rejected",
        "shape_drift",
        "upstream_bad_json",
        "pagination_stalled",
        "pagination_switched",
        "pagination_bad_link",
        "bad_redirect",
        "redirect_loop",
        "redirect_off_host",
        "bad_upstream_header",
    }
)
#: 502s that no retry and no reload heals within a run (a size limit): fail that notebook or listing at once
FINAL_CODES = frozenset({"upstream_too_large", "collection_too_large", "pagination_ties"})
#: 409s after which a listing is read again from its first page: the list moved under the walk, the
#: gateway was upgraded mid-walk and can no longer vouch for the cursor it issued before, or an
#: operator's reload changed how the route pages (the runbook's fix while the listing was read)
RESTART_CODES = {
    "collection_changed": "the listing changed while it was read",
    "cursor_outdated": "the gateway was upgraded while the listing was read",
    "route_changed": "the gateway's route was changed (a reload) while the listing was read",
}
#: the upstream refused the gateway's credential for this call (a 403: a permission or scope it lacks);
#: a permission does not appear by retrying: never retried; a listing refused so stops the run, and
#: notebooks refused so count towards BROKEN_AFTER (a missing scope refuses them all)
FORBIDDEN_CODES = frozenset({"upstream_forbidden"})
