"""The models a route entry and the whole document are read by: ``RouteSpec`` and ``DocumentSpec`` with
each section left to its own model (read on its own, where the checks spanning keys run).

Here a section is anything (``Free``): its own parser reads it once, so each mistake is told once, in the
order of the file. A route's required keys are optional here and told missing by ``schema.validate``
(``required=``), so that where one key is wrong the others still build and the checks spanning the route
(its upstream declared, ``fallback_on`` and its targets) still run: every problem is listed at once.
The JSON Schema and the reference are ``RouteSpec``'s and ``DocumentSpec``'s.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from gateway.config.spec_route import TARGETS, DocumentSpec, RouteSpec, _stable
from gateway.config.spec_types import Free, Wording


class RouteEntrySpec(RouteSpec):
    """A route's own keys (stable, upstream, auth, validate, fallback_on, description, no_store), its targets
    as a list and its params as a mapping; pagination, response, cache, probe, shape, each target and each
    param on their own."""

    stable: Annotated[str, BeforeValidator(_stable)] | None = None  # type: ignore[assignment]
    upstream: str | None = None  # type: ignore[assignment]
    targets: Annotated[list[Free], Field(min_length=1), TARGETS] | None = None  # type: ignore[assignment]
    params: Annotated[dict[str, Free], Wording("a mapping of param name → param")] | None = None
    pagination: Free = None
    response: Free = None
    cache: Free = None
    probe: Free = None
    shape: Free = None


class DocumentEntrySpec(DocumentSpec):
    """The document's own keys: ``version``, and ``upstreams`` and ``routes`` as mappings of names; every
    section and every entry on its own."""

    server: Free = None
    upstreams: Annotated[dict[str, Free], Wording("a mapping of upstream name → upstream")]
    routes: Annotated[dict[str, Free], Wording("a mapping of route name → route")]
    clients: Free = None
    admin: Free = None
    cache: Free = None
    probes: Free = None
