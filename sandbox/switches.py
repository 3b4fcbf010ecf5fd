"""The one table of sandbox switches: `POST /_sandbox/faults` accepts exactly these names and
`gateway sandbox --help` lists them, so the documentation cannot drift from the code
(tests/test_leftovers.py compares it with what `GET /_sandbox/faults` answers)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SWITCHES", "Switch", "help_epilog", "names_for"]


@dataclass(frozen=True, slots=True)
class Switch:
    """One switch: which sandbox has it, what it takes, and what real behaviour it models."""

    name: str
    services: tuple[str, ...]
    values: str
    models: str
    example: str  # the JSON body of an example POST /_sandbox/faults


_BOTH = ("observable", "posthog")
_OBS = ("observable",)
_PH = ("posthog",)

SWITCHES: tuple[Switch, ...] = (
    Switch(
        "latency_ms",
        _BOTH,
        "number >= 0 (default 0)",
        "a slow upstream: every answer is delayed (timeouts, 504s, the latency histogram)",
        '{"latency_ms": 1500}',
    ),
    Switch(
        "faults",
        _BOTH,
        "{path prefix: {status: N} | {drop_field: NAME} | {reset: true} | null}",
        "an outage or a moved route (status 404/410/5xx), a field the upstream stopped sending "
        "(drop_field), a connection cut without an answer (reset); null removes one prefix's fault",
        '{"faults": {"/documents/": {"status": 404}}}',
    ),
    Switch(
        "legacy_routes",
        _OBS,
        "boolean (default false)",
        "a list that moved: per-kind routes /user/public, /user/shared, /user/private, /user/trash "
        "(and /user/drafts, private's older name) answer like /user/documents?types=KIND",
        '{"legacy_routes": true}',
    ),
    Switch(
        "old_modules",
        _OBS,
        "boolean (default false)",
        "the sandbox's earlier model: every module is an ES module and the redirect drops the query",
        '{"old_modules": true}',
    ),
    Switch(
        "old_node_rules",
        _OBS,
        "boolean (default false)",
        "the sandbox's earlier model: nodes may carry only id, value and pinned",
        '{"old_node_rules": true}',
    ),
    Switch(
        "public_list_results",
        _OBS,
        "boolean (default false)",
        "the public user list (/documents/@login) answers {results: [...]} paged by ?page= "
        "instead of a bare array paged by ?before= (an unverified reading of the real API)",
        '{"public_list_results": true}',
    ),
    Switch(
        "session_expired",
        _OBS,
        "boolean (default false)",
        "Observable ended the session (it does about weekly) while the cookie is unchanged",
        '{"session_expired": true}',
    ),
    Switch(
        "signed_out",
        _OBS,
        '"empty" (default) or "401"',
        "how a signed-out caller is answered: 200 null / 200 [] as the real API does, or 401",
        '{"signed_out": "401"}',
    ),
    Switch(
        "rate_limit_per_minute",
        _PH,
        "integer or null (default null: no limit)",
        "PostHog's per-key throttling: past N calls a minute, 429 throttled (no Retry-After)",
        '{"rate_limit_per_minute": 5}',
    ),
    Switch(
        "key_scopes",
        _PH,
        "{api key: [scope, ...] | null}",
        "a personal API key missing a scope (e.g. notebook:write): 403 permission_denied",
        '{"key_scopes": {"phx_sandbox_personal_api_key_0123456789": ["notebook:read"]}}',
    ),
    Switch(
        "old_version_check",
        _PH,
        "boolean (default false)",
        "the sandbox's earlier model: version is read-only and bumped only when content changes",
        '{"old_version_check": true}',
    ),
    Switch(
        "old_deleted_404",
        _PH,
        "boolean (default false)",
        "the sandbox's earlier model: a PATCH to a soft-deleted notebook answers 404",
        '{"old_deleted_404": true}',
    ),
    Switch(
        "activity_paging",
        _PH,
        '"page" (default) or "offset"',
        "notebook activity paged by ?page= as PostHog does, or the older ?limit=&offset=",
        '{"activity_paging": "offset"}',
    ),
    Switch(
        "list_paging",
        _PH,
        '"offset" (default) or "cursor"',
        "the notebook list moves to an opaque cursor ({results, meta: {next_cursor, has_more}}, "
        "?cursor=): an upstream that changed its pagination",
        '{"list_paging": "cursor"}',
    ),
    Switch(
        "list_link_header",
        _PH,
        "boolean (default false)",
        'the notebook list also sends an RFC 8288 Link: <next>; rel="next" header',
        '{"list_link_header": true}',
    ),
)


def names_for(service: str) -> frozenset[str]:
    """The switch names the ``service`` sandbox accepts."""
    return frozenset(s.name for s in SWITCHES if service in s.services)


def help_epilog() -> str:
    """The switch list `gateway sandbox --help` prints after the options."""
    lines = [
        "fault switches (curl -X POST http://HOST:PORT/_sandbox/faults -d BODY; GET shows them;",
        "POST /_sandbox/reset clears them; docs/sandbox.md explains each):",
    ]
    for s in SWITCHES:
        where = "both" if s.services == _BOTH else s.services[0]
        lines.append(f"  {s.name} [{where}]: {s.values}")
        lines.append(f"      {s.models}")
        lines.append(f"      e.g. {s.example}")
    return "\n".join(lines)
