"""Stable cursors are signed and strictly checked: a forged, tampered or foreign cursor is a
400 ``bad_cursor`` before any upstream call; one deployment's workers agree on the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from sandbox.runner import Sandboxes
from tests.conftest import ROUTES
from tests.helpers.cursors import _b64, _payload, _secret, _signed
from tests.helpers.styles import STYLES_YAML

OBS = "/v1/observable/notebooks"
PH = "/v1/posthog/projects/1/notebooks"


async def _refused(gw: TestClient[Any, Any], sandboxes: Sandboxes, url: str, cursor: str) -> None:
    sandboxes.observable_state.reset_counters()
    sandboxes.posthog_state.reset_counters()
    resp = await gw.get(url, params={"cursor": cursor})
    body = await resp.json()
    assert resp.status == 400, body
    assert body["error"]["code"] == "bad_cursor"
    assert sandboxes.observable_state.total_requests == 0 and sandboxes.posthog_state.total_requests == 0


async def test_a_tampered_or_unsigned_cursor_is_refused_without_an_upstream_call(
    gw: TestClient[Any, Any], sandboxes: Sandboxes
) -> None:
    page = await (await gw.get(OBS, params={"type": "public,shared", "limit": "5"})).json()
    cursor = page["next_cursor"]
    assert (await gw.get(OBS, params={"cursor": cursor})).status == 200  # the genuine one works
    payload = _payload(cursor)
    # the 14.3 forgery: 300 invented stream names, with the old unsigned format and with a stale signature
    forged = {**payload, "p": {f"x{i}": None for i in range(300)}}
    unsigned = _b64(json.dumps(forged).encode())
    await _refused(gw, sandboxes, OBS, unsigned)
    await _refused(gw, sandboxes, OBS, unsigned + "." + cursor.partition(".")[2])
    # one flipped character in the body or the signature
    body, _, sig = cursor.partition(".")
    await _refused(gw, sandboxes, OBS, body[:-1] + ("A" if body[-1] != "A" else "B") + "." + sig)
    await _refused(gw, sandboxes, OBS, body + "." + sig[:-1] + ("A" if sig[-1] != "A" else "B"))
    await _refused(gw, sandboxes, OBS, "x" * 5000)


async def test_even_a_validly_signed_cursor_is_checked_strictly(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    """Should the key leak, a cursor still cannot widen the fan-out or smuggle values."""
    secret = _secret(gw)
    page = await (await gw.get(OBS, params={"type": "public,shared", "limit": "5"})).json()
    payload = _payload(page["next_cursor"])
    assert (await gw.get(OBS, params={"cursor": _signed(secret, payload)})).status == 200
    tied = {**payload, "p": {**payload["p"], "public": {"p": None, "v": "2000-01-01T00:00:00.000Z", "s": ["0" * 12]}}}
    assert (await gw.get(OBS, params={"cursor": _signed(secret, tied)})).status == 200  # the tie's form is a position
    bad_obs = [
        {**payload, "p": {f"x{i}": None for i in range(300)}},  # count, and names outside the type enum
        {**payload, "p": {"public": None, "invented": None}},  # one name outside the enum
        {**payload, "p": {"public": {"$gt": ""}}},  # a position of the wrong type
        {**payload, "p": {"public": True}},
        # inside a run of tied values (gateway.pagination.before): exactly p, v and s, s a short list of marks
        {**payload, "p": {"public": {"p": None, "v": "2020", "s": ["not-a-mark"]}}},
        {**payload, "p": {"public": {"p": None, "v": "2020", "s": []}}},
        {**payload, "p": {"public": {"p": None, "v": None, "s": ["0" * 12]}}},
        {**payload, "p": {"public": {"p": None, "v": "2020", "s": ["0" * 12] * 101}}},
        {**payload, "p": {"public": {"p": None, "v": "2020", "s": ["0" * 16]}}},
        {**payload, "p": {"public": {"p": {"$gt": ""}, "v": "2020", "s": ["0" * 12]}}},
        {**payload, "p": {"public": {"p": None, "v": "2020", "s": ["0" * 12], "x": 1}}},
        {**payload, "p": {"public": {"p": None, "v": "2020", "s": ["X" * 12]}}},
        {**payload, "p": {"public": {"p": None, "v": {"$gt": ""}, "s": ["0" * 12]}}},
        {**payload, "e": ["private"]},  # ended a stream it does not walk
        {**payload, "r": "posthog_notebooks"},  # another route's
        {**payload, "m": {"f": "not-a-fingerprint"}},
        {**payload, "x": 1},  # an unknown field
        [payload],
    ]
    for forged in bad_obs:
        await _refused(gw, sandboxes, OBS, _signed(secret, forged))  # type: ignore[arg-type]
    ph = _payload((await (await gw.get(PH, params={"limit": "5"})).json())["next_cursor"])
    assert ph["p"] == {"": 5}
    for forged in ({**ph, "p": {"": -1}}, {**ph, "p": {"": "5"}}, {**ph, "p": {"a": 5}}, {**ph, "p": {"": 5.5}}):
        await _refused(gw, sandboxes, PH, _signed(secret, forged))


async def test_a_next_url_cursor_cannot_name_a_url(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    """The next_url position is a path below the origin, and only the target's own path."""
    gw = await make_gateway(STYLES_YAML, env=sandbox_env)
    secret = _secret(gw)
    page = await (await gw.get("/v1/by-link", params={"limit": "50"})).json()
    payload = _payload(page["next_cursor"])
    assert payload["p"] == {"": {"t": "/api/projects/1/notebooks/?limit=40&offset=40", "s": 10}}
    assert (await gw.get("/v1/by-link", params={"cursor": _signed(secret, payload)})).status == 200
    for token in (
        "http://evil.example/x",
        "//evil.example/x",
        "/api/projects/2/notebooks/?limit=40",  # the origin's, but not this route's target path
        "/api/projects/1/notebooks/abc/activity",
        7,
    ):
        await _refused(gw, sandboxes, "/v1/by-link", _signed(secret, {**payload, "p": {"": {"t": token, "s": 0}}}))


async def test_workers_of_one_deployment_share_the_key_and_a_configured_key_rules(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    text = ROUTES.read_text()
    # two workers with the same config and secrets derive the same key: a cursor from one works on the other
    a, b = await make_gateway(), await make_gateway()
    cursor = (await (await a.get(PH, params={"limit": "5"})).json())["next_cursor"]
    assert (await b.get(PH, params={"cursor": cursor})).status == 200
    # with server.cursor_key configured, the key is that secret's, whatever else differs
    keyed = text.replace("\nserver:\n", "\nserver:\n  cursor_key: {env: ROUTEGATE_CURSOR_KEY}\n", 1)
    assert keyed != text
    env1 = {**sandbox_env, "ROUTEGATE_CURSOR_KEY": "k1-0123456789abcdef"}
    c = await make_gateway(keyed, env=env1)
    d = await make_gateway(keyed + "\n# another comment, another digest\n", env=env1)
    cursor = (await (await c.get(PH, params={"limit": "5"})).json())["next_cursor"]
    assert (await d.get(PH, params={"cursor": cursor})).status == 200
    e = await make_gateway(keyed, env={**sandbox_env, "ROUTEGATE_CURSOR_KEY": "k2-other-key-987654"})
    await _refused(e, sandboxes, PH, cursor)
    await _refused(a, sandboxes, PH, cursor)  # nor does a deployment without it accept it
    for page in ("/status", "/metrics"):
        assert "k1-0123456789abcdef" not in await (await c.get(page)).text()


def test_the_key_is_never_in_the_config_repr(tmp_path: Path) -> None:
    from gateway.config import parse_config

    keyed = ROUTES.read_text().replace("\nserver:\n", "\nserver:\n  cursor_key: {env: K}\n", 1)
    cfg = parse_config(keyed, str(ROUTES), {"K": "secret-cursor-key-value"})
    assert cfg.server.cursor_key is not None
    assert "secret-cursor-key-value" not in repr(cfg)
