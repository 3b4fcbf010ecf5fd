"""Config texts for the reload tests: the shipped routes.yaml edited, broken or marked with a generation."""

from __future__ import annotations

import re

from tests.conftest import ROUTES

ADMIN_YAML = "\nadmin:\n  keys:\n    ops: {key: {env: ADMIN_KEY}}\n"


ANCHOR = "      item: &posthog_detail\n"


def without(key: str, text: str) -> str:
    """``text`` without any upstream's or route's ``key:`` setting (flow or block style)."""
    return re.sub(rf"^    {key}:.*\n(?:      .*\n)*", "", text, flags=re.MULTILINE)


def generation(name: str) -> str:
    """The shipped routes.yaml whose PostHog notebook items carry ``generation: name``.

    Outbound request budgets and response caching are taken out: the load below is far
    beyond PostHog's real 480/minute, and every request should really cross the gateway to
    the upstream while configs swap; what is tested here is reloading, not pacing or caching.
    """
    text = without("request_budget", without("cache", ROUTES.read_text()))
    assert text.count(ANCHOR) == 1
    return text.replace(ANCHOR, f"{ANCHOR}        generation: {{const: {name}}}\n") + ADMIN_YAML


def broken(text: str) -> str:
    """``text`` cut off just before a route's targets: well-formed YAML, but an invalid config."""
    return text[: text.index("    targets:", text.index("posthog_notebook_update:"))]
