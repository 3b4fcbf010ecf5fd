"""Issues 13/14/16 leftovers: the sandbox switch table, stable single-document fields, hostile logs."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from gateway.config import ConfigError, load_config
from gateway.openapi import build as build_openapi
from sandbox.observable import ObservableState
from sandbox.posthog import PostHogState
from sandbox.runner import Sandboxes, gateway_env, start_sandboxes
from sandbox.switches import SWITCHES, names_for
from tests.conftest import ROOT, ROUTES
from tests.processes import serve


async def _get_switches(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(url + "/_sandbox/faults") as r:
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body


async def test_switch_table_is_what_each_sandbox_lists(sandboxes: Sandboxes) -> None:
    """`curl /_sandbox/faults` on each sandbox lists exactly the table's switches for it."""
    for service, url in (("observable", sandboxes.observable_url), ("posthog", sandboxes.posthog_url)):
        assert set(await _get_switches(url)) == names_for(service), service


async def test_every_documented_example_is_accepted(sandboxes: Sandboxes) -> None:
    """Each table row's example body is a valid POST /_sandbox/faults on its sandbox; unknown names are 400."""
    async with aiohttp.ClientSession() as s:
        for sw in SWITCHES:
            for service in sw.services:
                url = sandboxes.observable_url if service == "observable" else sandboxes.posthog_url
                async with s.post(url + "/_sandbox/faults", data=sw.example) as r:
                    assert r.status == 200, (sw.name, service, await r.text())
                async with s.post(url + "/_sandbox/reset") as r:
                    assert r.status == 200
        async with s.post(sandboxes.posthog_url + "/_sandbox/faults", json={"public_list_results": True}) as r:
            assert r.status == 400
            assert "unknown switches" in (await r.json())["error"]


@pytest.mark.parametrize("argv", [["gateway", "sandbox", "--help"], ["sandbox.runner", "--help"]])
def test_sandbox_help_lists_every_switch(argv: list[str]) -> None:
    """`gateway sandbox --help` (and the runner's own) print every switch from the same table."""
    out = subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    for sw in SWITCHES:
        assert f"  {sw.name} [" in out
        assert sw.example in out
    doc = (ROOT / "docs" / "sandbox.md").read_text()
    for sw in SWITCHES:
        assert f"`{sw.name}`" in doc, f"docs/sandbox.md does not document {sw.name}"


# -- 4: a single document uses the stable field names and keeps everything else ------------------


async def test_notebook_document_has_updated_at_and_keeps_every_other_field(
    sandboxes: Sandboxes, gw: TestClient[Any, Any]
) -> None:
    """GET /v1/observable/notebooks/{id} is the upstream document with update_time named updated_at."""
    nb = next(n for n in sandboxes.observable_state.notebooks.values() if n.type == "public")
    async with aiohttp.ClientSession() as s, s.get(f"{sandboxes.observable_url}/document/{nb.id}") as r:
        assert r.status == 200
        upstream = await r.json()
    resp = await gw.get(f"/v1/observable/notebooks/{nb.id}")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["updated_at"] == upstream["update_time"] == nb.update_time
    assert "update_time" not in body
    assert {k: v for k, v in body.items() if k != "updated_at"} == {
        k: v for k, v in upstream.items() if k != "update_time"
    }
    assert body["nodes"] and body["owner"]["login"]  # the whole document: nothing a backup needs is lost


async def test_document_that_lost_the_renamed_field_is_shape_drift(
    sandboxes: Sandboxes, gw: TestClient[Any, Any]
) -> None:
    """keep_other_fields does not make a mapped field optional: a missing update_time is a 502 shape_drift."""
    nb = next(n for n in sandboxes.observable_state.notebooks.values() if n.type == "public")
    sandboxes.observable_state.apply_switches({"faults": {"/document/": {"drop_field": "update_time"}}})
    resp = await gw.get(f"/v1/observable/notebooks/{nb.id}")
    assert resp.status == 502
    err = (await resp.json())["error"]
    assert err["code"] == "shape_drift" and err["route"] == "observable_notebook" and "update_time" in err["message"]


def test_openapi_says_the_document_keeps_other_fields() -> None:
    doc = build_openapi(load_config(ROUTES))
    get = doc["paths"]["/v1/observable/notebooks/{id}"]["get"]
    schema = get["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is True
    assert "updated_at" in schema["properties"] and "update_time" not in schema["properties"]
    assert "updated_at" in schema["required"]


def test_keep_other_fields_needs_item(tmp_path: Path) -> None:
    """`gateway check` refuses keep_other_fields on a route that maps no single item."""
    comment = "      # the stable names the lists use; every other field of the document passes through as it is\n"
    text = ROUTES.read_text().replace(
        "    response:\n" + comment + "      item:\n        updated_at: update_time\n      keep_other_fields: true\n",
        "    response:\n      keep_other_fields: true\n",
    )
    assert text != ROUTES.read_text()
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="keep_other_fields passes the rest of a single document through"):
        load_config(path, env={})


# -- 5: a representative hostile mix leaves no traceback and no secret in the gateway's log ------

T_TOKEN = "TESTSECRET_leftovers_T_3b7e1d9c"
BEARER = "phx_TESTSECRET_leftovers_bearer_6a2f8c"


async def _raw(base: str, payload: bytes) -> bytes:
    """Send raw bytes (what no HTTP client would) and read what comes back."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
    return data


@pytest.mark.hostile
async def test_hostile_mix_logs_no_traceback_and_no_secret() -> None:
    """Hostile clients and upstreams against a real `gateway serve` at debug level: its whole stderr
    has no traceback and none of the configured secrets, and no answer is a 500."""
    obs = ObservableState()
    obs.token = T_TOKEN
    async with await start_sandboxes(observable_state=obs, posthog_state=PostHogState(api_keys={BEARER})) as sb:
        env = gateway_env(sb)
        secrets = [T_TOKEN, BEARER, env["OBSERVABLE_SESSION"]]
        statuses: list[int] = []
        async with serve(ROUTES, env, "--log-level", "debug") as (base, proc, lines):
            async with aiohttp.ClientSession(base) as s:

                async def hit(method: str, path: str, **kw: Any) -> None:
                    try:
                        async with s.request(method, path, **kw) as r:
                            await r.read()
                            statuses.append(r.status)
                    except aiohttp.ClientConnectionError as exc:  # say why: the process, its last words
                        tail = "".join(lines[-30:])
                        raise AssertionError(f"{method} {path[:80]}: {exc}; {proc.returncode=}\n{tail}") from exc

                # hostile clients: bad cursors, unknown and repeated params, deep and NaN JSON, huge bodies
                await hit("GET", "/v1/observable/notebooks?cursor=" + "A" * 5000)
                await hit("GET", "/v1/observable/notebooks?cursor=eyJ4IjpOYU59")
                await hit("GET", "/v1/observable/notebooks?" + "&".join(f"p{i}=1" for i in range(300)))
                await hit("GET", "/v1/observable/notebooks?limit=abc&limit=2")
                await hit(
                    "POST",
                    "/v1/observable/notebooks",
                    data=b"[" * 5000 + b"]" * 5000,
                    headers={"Content-Type": "application/json"},
                )
                await hit(
                    "POST", "/v1/observable/notebooks", data=b'{"x": NaN}', headers={"Content-Type": "application/json"}
                )
                await hit(
                    "POST",
                    "/v1/observable/notebooks",
                    data=io.BytesIO(b"x" * (2 << 20)),
                    headers={"Content-Type": "application/json"},
                )
                # hostile upstreams: 500s with bodies, cut connections, dropped fields, revoked credentials
                for prefix, fault in (
                    ("/document/", {"status": 500}),
                    ("/user/", {"reset": True}),
                    ("/documents/", {"drop_field": "update_time"}),
                ):
                    obs.apply_switches({"faults": {prefix: fault}})
                nb = next(n for n in obs.notebooks.values() if n.type == "public")
                await hit("GET", f"/v1/observable/notebooks/{nb.id}")
                await hit("GET", "/v1/observable/notebooks?limit=3")
                await hit("GET", "/v1/observable/users/demo/notebooks?all=true")
                sb.posthog_state.apply_switches({"key_scopes": {BEARER: []}})
                await hit("GET", "/v1/posthog/projects/1/notebooks")
                obs.apply_switches({"faults": {"/document/": None}, "session_expired": True})
                await hit("GET", f"/v1/observable/notebooks/{nb.id}/module")
            # bytes no HTTP client sends
            answers = [
                await _raw(base, b"GET / HTTP/0.9\r\n\r\n"),
                await _raw(base, b"GET http://evil.example/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
                await _raw(base, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64),
                await _raw(base, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\x00: x\r\n\r\n"),
            ]
        first_lines = [a.split(b"\r\n")[0] for a in answers]
        assert all(a == b"" or (a.startswith(b"HTTP/") and b" 500 " not in a) for a in first_lines), answers
        assert 500 not in statuses, statuses
        assert {400, 413, 502}.issubset(statuses), statuses
        log = "".join(lines)
        # the run was logged: an access line per request and the parser's rejections
        assert sum('"logger":"gateway.access"' in line for line in lines) >= len(statuses) + 2
        assert log.count("the HTTP parser rejected a request") >= 2
        assert "Traceback" not in log
        for line in lines:
            if line.startswith("{"):
                assert "exc" not in json.loads(line), line
        for secret in secrets:
            assert secret not in log
