"""Names that routes.yaml may use and runtime code implements, listed once for both sides.

Config checks a route's ``validate:`` against this list without importing the validators
(config imports no runtime code); ``gateway.validators`` asserts at import that it
implements exactly these names, so the two cannot drift apart.
"""

from __future__ import annotations

#: body validators a route may attach with ``validate: NAME`` (implemented in gateway.validators)
VALIDATOR_NAMES: frozenset[str] = frozenset(
    {"observable_new_document", "posthog_notebook_create", "posthog_notebook_update"}
)

#: the gateway's own endpoints (registered in gateway.server.app before the stable routes): a stable route
#: on one of these paths is never served; tests/test_qa_fixes.py asserts the app registers exactly these
OWN_PATHS: frozenset[str] = frozenset(
    {"/healthz", "/readyz", "/metrics", "/admin/reload", "/admin/cache/purge", "/openapi.json", "/status"}
)
