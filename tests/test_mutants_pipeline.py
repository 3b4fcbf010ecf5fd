"""The pipeline stages and the proxy's response side: the survivors ``make mutants`` (group
``pipeline``) found, each killed here through real HTTP: what the client gets back, and what the
upstream (a real aiohttp server on 127.0.0.1, tests/fake_upstream.py) was sent.

Each test's docstring names the mutants (the wrong changes) it catches.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp.test_utils import TestClient

from tests.fake_upstream import FakeUpstream, Reply, start_fake

YAML = """
server:
  max_body_bytes: 1KiB
  client_timeouts: {headers: 1s, body: 1s}
upstreams:
  origin:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
routes:
  thing:
    stable: GET /v1/things/{id}
    upstream: origin
    auth: none
    targets: ["GET /things/{id}"]
  create:
    stable: POST /v1/things
    upstream: origin
    auth: none
    targets: ["POST /things"]
  blank:
    stable: POST /v1/blank
    upstream: origin
    auth: none
    targets: [{request: "POST /blank", body: none}]
"""

LIMIT = 1024


async def _gateway(make_gateway: Any, aiohttp_server: Any, yaml: str = YAML) -> tuple[TestClient[Any, Any], FakeUpstream]:
    fake, _, base = await start_fake(aiohttp_server)
    gw = await make_gateway(yaml, env={"ORIGIN_URL": base})
    return gw, fake


async def _error(resp: Any, status: int, code: str) -> dict[str, Any]:
    body = await resp.json()
    assert resp.status == status, body
    assert body["error"]["code"] == code, body
    err: dict[str, Any] = body["error"]
    return err


def _json_of_size(n: int) -> bytes:
    """A JSON object of exactly ``n`` bytes, as the gateway writes it again (no spaces)."""
    raw = b'{"a":"' + b"x" * (n - 8) + b'"}'
    assert len(raw) == n
    return raw


# --------------------------------------------------------------------------- body.py


async def test_a_body_of_exactly_the_limit_is_forwarded(make_gateway: Any, aiohttp_server: Any) -> None:
    """``content_length >= limit`` and ``size >= limit`` (413 at the limit itself), ``size = 1`` at the start."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    body = _json_of_size(LIMIT)
    resp = await gw.post("/v1/things", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert fake.hits[-1].body == body

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: only the reading loop counts
        yield body[:600]
        await asyncio.sleep(0.05)
        yield body[600:]

    resp = await gw.post("/v1/things", data=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert fake.count("/things") == 2 and fake.hits[-1].body == body


async def test_a_chunked_body_over_the_limit_is_413_however_it_arrives(make_gateway: Any, aiohttp_server: Any) -> None:
    """``size = len(chunk)`` (each piece under the limit, the whole over it)."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    body = _json_of_size(LIMIT + 200)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 400):
            yield body[start : start + 400]
            await asyncio.sleep(0.05)

    resp = await gw.post("/v1/things", data=chunks(), headers={"Content-Type": "application/json"})
    err = await _error(resp, 413, "payload_too_large")
    assert err["route"] == "create"
    assert fake.count() == 0


async def test_a_json_suffix_media_type_is_json(make_gateway: Any, aiohttp_server: Any) -> None:
    """``endswith("XX+jsonXX")`` / ``endswith("+JSON")``: application/merge-patch+json is JSON."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    resp = await gw.post("/v1/things", data=b'{"a": 1}', headers={"Content-Type": "application/merge-patch+json"})
    assert resp.status == 200, await resp.text()
    assert json.loads(fake.hits[-1].body) == {"a": 1}
    resp = await gw.post("/v1/things", data=b'{"a": 1}', headers={"Content-Type": "text/plain"})
    err = await _error(resp, 415, "unsupported_media_type")
    assert err["message"] == "send the body as application/json, not text/plain"
    assert fake.count() == 1


async def test_a_passthrough_write_without_a_body_is_missing_body(make_gateway: Any, aiohttp_server: Any) -> None:
    """``_needs_body(None)``, the message or code dropped or changed, ``_needs_body`` with ``!=`` or
    another mode name, ``not in _BODY_METHODS``."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    for body in (b"", b"  \n"):
        resp = await gw.post("/v1/things", data=body, headers={"Content-Type": "application/json"})
        err = await _error(resp, 400, "missing_body")
        assert err["message"] == "POST /v1/things needs a JSON body (Content-Type: application/json)"
    assert fake.count() == 0


async def test_a_write_whose_target_takes_no_body_needs_none(make_gateway: Any, aiohttp_server: Any) -> None:
    """``_needs_body`` with ``or``: a target with ``body: none`` is called without one."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    resp = await gw.post("/v1/blank")
    assert resp.status == 200, await resp.text()
    assert fake.count("/blank") == 1 and fake.hits[-1].body == b""


async def test_a_json_null_body_forwards_no_body(make_gateway: Any, aiohttp_server: Any) -> None:
    """``None if (parsed is None) and False``: a body that parses to nothing sends nothing."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    resp = await gw.post("/v1/things", data=b"null", headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert fake.hits[-1].body == b""


async def test_bad_json_bodies_say_what_is_wrong(make_gateway: Any, aiohttp_server: Any) -> None:
    """json_too_deep: message or code dropped or changed; malformed_json: where it broke (``where =
    None``, ``and False``, ``or True``, ``else "XXXX"``)."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    deep = b"[" * 1100 + b"]" * 1100
    resp = await gw.post("/v1/things", data=deep, headers={"Content-Type": "application/json"})
    # over 1 KiB: the limit first
    await _error(resp, 413, "payload_too_large")
    yaml = YAML.replace("max_body_bytes: 1KiB", "max_body_bytes: 8KiB")
    gw, fake = await _gateway(make_gateway, aiohttp_server, yaml)
    resp = await gw.post("/v1/things", data=deep, headers={"Content-Type": "application/json"})
    err = await _error(resp, 400, "json_too_deep")
    assert err["message"] == "the body is JSON nested deeper than 1024 levels"
    assert err["route"] == "create"
    resp = await gw.post("/v1/things", data=b'{"a": }', headers={"Content-Type": "application/json"})
    err = await _error(resp, 400, "malformed_json")
    assert err["message"] == "the body is not valid JSON at line 1 column 7"
    resp = await gw.post("/v1/things", data=b'{"a": NaN}', headers={"Content-Type": "application/json"})
    err = await _error(resp, 400, "malformed_json")
    assert err["message"] == "the body is not valid JSON"
    assert fake.count() == 0
