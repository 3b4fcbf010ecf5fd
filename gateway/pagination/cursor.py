"""The stable ``next_cursor``: signed, and validated strictly before any upstream call.

A cursor is ``base64url(JSON) "." base64url(HMAC-SHA256)``.  The JSON names its route,
the streams it walks with one position each, the streams that ended, fingerprints that
let a later request notice a stalled upstream or a list that moved under the walk (``l``: the
identity of the last item served, gateway.pagination.shifts), where the route's targets page differently
the target walked (``common.Position``), a digest binding it to the request's path values
(``binding``), and the route's paging fingerprint (``g``: gateway.pagination.stale).

Why signed: a cursor is the one piece of client input that steers upstream calls
(which streams, which next link).  With an HMAC no client can invent one, and the
strict checks below still hold if the key leaks: the route, the streams against the
fan-out ``enum`` and their count, and every value's type.  Anything else is a 400
``bad_cursor`` and nothing is sent upstream, except a cursor this deployment issued for this
route before a reload changed how it pages: 409 ``route_changed`` (gateway.pagination.stale).

The key (``cursor_key``): ``server.cursor_key`` when configured (a secret, ``{env: ...}``),
so every worker and replica given that secret agrees; otherwise derived from the
upstream credentials the deployment already shares, so it changes when they do (cursors
issued before then answer 400 ``bad_cursor``: start the walk again).  A reload that only
edits routes keeps the key: the runbook's fix mid-backup must not look like a forged cursor;
a cursor the edited route can no longer follow is a 409 ``route_changed`` (start again).
The key is never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway import jsonio
from gateway.config import Route
from gateway.errors import BadGateway, BadRequest
from gateway.pagination import stale
from gateway.pagination.common import TIE_ID_CHARS, Position, key

#: longer than any cursor the gateway issues (a few streams, a next link of a few hundred bytes)
MAX_CURSOR_CHARS = 4096
_MAX_TEXT = 2048
_SIG_BYTES = 18
_DOMAIN = b"routegate-cursor-v1"


def derive_key(configured: str | None, shared_secrets: Iterable[str]) -> bytes:
    """The deployment's signing key (see the module docstring for why these inputs)."""
    if configured:
        material = b"configured\0" + configured.encode()
    else:
        material = b"derived\0" + "\0".join(sorted(shared_secrets)).encode()
    return hmac.new(_DOMAIN, material, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest()[:_SIG_BYTES])


def binding(route: Route, params: Mapping[str, Any], target: int | None = None) -> str:
    """What a cursor holds only for: the route's path values (another login's or project's walk
    is not this one's: its position would skip or repeat items).  ``target``: the form of cursors
    issued before route fingerprints, which also bound, where targets page differently, the target
    walked as routes.yaml said it; the fingerprint (``g``, gateway.pagination.stale) carries that now,
    so that a reload changing it is told apart from another walk's cursor."""
    parts = [str(params.get(name, "")) for name in sorted(route.path.names)]
    if target is not None and route.mixed_paging:
        parts.append(route.targets[target].label)  # a target out of range was refused before (_checked)
    if not parts:
        return ""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


#: tied items a cursor carries at most (gateway.pagination.before): past it, a 502 rather than a lost
#: or repeated item, or a cursor too long for a URL
MAX_TIED = 100


def encode_cursor(
    route: Route, streams: Sequence[str | None], position: Position, secret: bytes, params: Mapping[str, Any]
) -> str | None:
    """The signed cursor of ``position``; ``params``: the request's (its path values are bound in)."""
    if position.done(streams):
        return None
    for at in position.pos.values():  # a ``before`` tie's form lists ids ("s"); the linked styles' counts
        if isinstance(at, dict) and isinstance(at.get("s"), list) and len(at["s"]) > MAX_TIED:
            raise BadGateway(  # kind: the data, not the route breaking (gateway.proxy.NOT_DOWN)
                f"more than {MAX_TIED} items share one paging value; a cursor cannot resume inside them "
                "(ask with a larger limit, or all=true)",
                kind="ties",
                code="pagination_ties",
                route=route.name,
            )
    payload: dict[str, Any] = {
        "r": route.name,
        "p": {key(s): position.pos.get(key(s)) for s in streams},
        "e": sorted(position.ended),
        "g": stale.fingerprint(route),
    }
    if position.marks:
        payload["m"] = dict(sorted(position.marks.items()))
    if position.target:
        payload["k"] = position.target
    if bound := binding(route, params):
        payload["a"] = bound
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{_sign(secret, body)}"


def decode_cursor(route: Route, text: str, secret: bytes, params: Mapping[str, Any]) -> tuple[list[str], Position]:
    """The streams the cursor was issued for, and their positions.  400 ``bad_cursor`` unless
    it is one this deployment issued for this route and these path values, with values of the
    right kinds; 409 ``route_changed`` for one issued for this route before a reload changed how
    it pages (``stale``)."""
    try:
        if len(text) > MAX_CURSOR_CHARS:
            raise ValueError("length")
        body, _, sig = text.partition(".")
        if not hmac.compare_digest(sig.encode(), _sign(secret, body).encode()):
            raise ValueError("signature")
        data = jsonio.loads(_unb64(body))  # no NaN or Infinity, no nesting past jsonio's bound
        return _checked(route, data, params)
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(
            "the cursor is not valid for this route; pass next_cursor exactly as it was returned",
            code="bad_cursor",
            route=route.name,
        ) from None


def _checked(route: Route, data: Any, params: Mapping[str, Any]) -> tuple[list[str], Position]:
    """Every field of a decoded cursor against what this route could have issued; ValueError if not."""
    if not isinstance(data, dict) or set(data) - {"r", "p", "e", "m", "k", "a", "g"} or data.get("r") != route.name:
        raise ValueError("route")
    issued_for = data.get("g")
    if issued_for is not None:  # None: a cursor from before fingerprints, checked strictly below
        if not _is_hex(issued_for, 16) or data.get("a", "") != binding(route, params):
            raise ValueError("binding")  # another walk's cursor (other path values): the client's mistake
        if issued_for != stale.fingerprint(route):  # issued by us for this walk: the route changed since
            raise stale.RouteChanged(stale.MESSAGE, route=route.name)
    target = data.get("k", 0)
    if not _is_count(target, len(route.targets) - 1) or (target and not route.mixed_paging):
        raise ValueError("target")
    if issued_for is None and data.get("a", "") != binding(route, params, target):
        raise ValueError("binding")
    pos, ended, marks = data["p"], data.get("e", []), data.get("m", {})
    if not isinstance(pos, dict) or not isinstance(ended, list) or not isinstance(marks, dict):
        raise ValueError("shape")
    fan = next((p for p in route.params if p.fan_out), None)
    if fan is None:
        if list(pos) != [""]:
            raise ValueError("streams")
    else:
        allowed = fan.enum
        if not pos or len(pos) > (len(allowed) if allowed else 16):
            raise ValueError("stream count")
        for name in pos:
            if (allowed is not None and name not in allowed) or not name or len(name) > 100:
                raise ValueError("stream")
    if not all(isinstance(e, str) and e in pos for e in ended) or len(set(ended)) != len(ended):
        raise ValueError("ended")
    if set(marks) - {"f", "h", "l", "t"} or not all(
        _is_hex(v, TIE_ID_CHARS if k == "l" else 16) for k, v in marks.items()
    ):
        raise ValueError("marks")
    pag = route.paging(target)
    assert pag is not None
    if not all(_value_ok(pag.style, v) for v in pos.values()):
        raise ValueError("position")
    return list(pos), Position(dict(pos), set(ended), dict(marks), target=target)


def _is_hex(value: Any, length: int) -> bool:
    """A digest of ``length`` hex digits: a walk's mark (16), a tied item's or the last served item's
    identity (TIE_ID_CHARS)."""
    return isinstance(value, str) and len(value) == length and all(c in "0123456789abcdef" for c in value)


def _is_count(value: Any, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= hi


def _before_ok(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= _MAX_TEXT
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value))


def _value_ok(style: str, value: Any) -> bool:
    if style == "before":
        if isinstance(value, dict):  # inside a run of tied values (gateway.pagination.before)
            tied = value.get("s")
            return (
                set(value) == {"p", "v", "s"}
                and _before_ok(value["p"])
                and value["v"] is not None
                and _before_ok(value["v"])
                and isinstance(tied, list)
                and 0 < len(tied) <= MAX_TIED
                and all(_is_hex(t, TIE_ID_CHARS) for t in tied)
            )
        return _before_ok(value)
    if style == "offset":
        return value is None or _is_count(value, 10**12)
    if not isinstance(value, dict) or set(value) != {"t", "s"} or not _is_count(value["s"], 100_000):
        return False
    tok = value["t"]
    if tok is None:
        return True
    if style == "page":
        return _is_count(tok, 10**9)
    if not isinstance(tok, str) or not tok or len(tok) > _MAX_TEXT:
        return False
    return style != "next_url" or (tok.startswith("/") and not tok.startswith("//"))
