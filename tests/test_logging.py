"""Structured access logs: one JSON line per request, a working --log-level, and no secret anywhere."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.logs import REDACTED, JsonFormatter, Redactor
from sandbox.runner import Sandboxes
from tests.conftest import ROUTES
from tests.helpers.cli import run
from tests.helpers.reload import broken, without
from tests.processes import serve

KEYED = """
clients:
  keys:
    reader: {key: {env: READER_KEY}, methods: [GET]}
    writer: {key: {env: WRITER_KEY}}
admin:
  keys:
    ops: {key: {env: ADMIN_KEY}}
"""
CLIENT_KEYS = {
    "READER_KEY": "rk_reader_" + "r" * 24,
    "WRITER_KEY": "wk_writer_" + "w" * 24,
    "ADMIN_KEY": "ak_" + "a" * 30,
}
UPSTREAM_SECRETS = ("POSTHOG_API_KEY", "OBSERVABLE_SESSION", "OBSERVABLE_TOKEN")


def _access(caplog: pytest.LogCaptureFixture, rid: str) -> dict[str, Any]:
    lines = [
        r for r in caplog.records if r.name == "gateway.access" and getattr(r, "fields", {}).get("request_id") == rid
    ]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert json.loads(lines[0].getMessage()) == lines[0].fields  # type: ignore[attr-defined]
    fields: dict[str, Any] = lines[0].fields  # type: ignore[attr-defined]
    return fields


async def test_one_access_line_per_request_with_route_client_statuses_and_timings(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    # without response caching and retries, every request's upstream calls are exactly countable
    text = without("retries", without("cache", ROUTES.read_text()))
    gw = await make_gateway(text + KEYED, env={**sandbox_env, **CLIENT_KEYS})
    reader = {"X-API-Key": CLIENT_KEYS["READER_KEY"]}
    sandboxes.posthog_state.latency_ms = 20
    resp = await gw.get("/v1/posthog/projects/1/notebooks?all=true", headers={**reader, "X-Request-ID": "t-all"})
    assert resp.status == 200
    line = _access(caplog, "t-all")
    pages = sandboxes.posthog_state.count("GET", "/api/projects/1/notebooks/")
    assert pages >= 1
    assert line["event"] == "request" and line["method"] == "GET"
    assert line["path"] == "/v1/posthog/projects/1/notebooks"  # never the query string
    assert line["route"] == "posthog_notebooks" and line["client"] == "reader"
    assert line["status"] == 200 and line["upstream_status"] == 200 and line["upstream_calls"] == pages
    assert line["upstream_ms"] >= 20 * pages * 0.9 and line["duration_ms"] >= 20
    assert line["error"] is None and line["cache"] is None  # no cache configured: no verdict

    sandboxes.posthog_state.latency_ms = 0
    sandboxes.posthog_state.apply_switches({"faults": {"/api/projects/1/notebooks/": {"status": 500}}})
    resp = await gw.get("/v1/posthog/projects/1/notebooks", headers={**reader, "X-Request-ID": "t-500"})
    assert resp.status == 502
    line = _access(caplog, "t-500")
    assert line["upstream_status"] == 500 and line["error"] == "upstream_failed" and line["upstream_calls"] >= 1

    resp = await gw.get("/v1/nothing/here", headers={**reader, "X-Request-ID": "t-404"})
    line = _access(caplog, "t-404")
    assert resp.status == 404 and line["route"] == "(none)" and line["error"] == "no_route"
    assert line["upstream_calls"] == 0 and line["upstream_status"] is None

    resp = await gw.get("/v1/posthog/projects/1/notebooks", headers={"X-Request-ID": "t-401"})
    line = _access(caplog, "t-401")
    assert resp.status == 401 and line["client"] is None and line["error"] == "missing_api_key"


async def test_an_internal_error_is_logged_with_its_code(
    make_gateway: Any, sandbox_env: dict[str, str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    gw = await make_gateway(ROUTES.read_text(), env=sandbox_env)

    async def broken_handle(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("gateway.proxy.Proxy.handle", broken_handle)
    resp = await gw.get("/v1/posthog/projects/1/notebooks", headers={"X-Request-ID": "t-bug"})
    assert resp.status == 500 and (await resp.json())["error"]["code"] == "internal_error"
    line = _access(caplog, "t-bug")
    assert line["status"] == 500 and line["error"] == "internal_error" and line["route"] == "posthog_notebooks"


def test_the_json_formatter_redacts_secret_values() -> None:
    secret = 'phx_se"cret\\value'
    formatter = JsonFormatter(Redactor(lambda: [secret, "abc"]))  # too short to redact safely: left alone
    record = logging.LogRecord("gateway", logging.ERROR, __file__, 1, "boom %s / abc", (f"Bearer {secret}",), None)
    out = formatter.format(record)
    assert secret not in out and json.dumps(secret)[1:-1] not in out
    assert json.loads(out)["message"] == f"boom Bearer {REDACTED} / abc"
    fields = {"event": "request", "note": secret}
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "x", (), None)
    record.fields = fields
    assert json.loads(formatter.format(record))["note"] == REDACTED


async def test_no_secret_reaches_the_logs_or_metrics_of_a_real_process(
    sandboxes: Sandboxes, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(ROUTES.read_text() + KEYED)
    env = {**sandbox_env, **CLIENT_KEYS}
    secrets = [env[name] for name in UPSTREAM_SECRETS] + list(CLIENT_KEYS.values())
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    bodies: list[str] = []
    async with serve(config, env, "--log-level", "debug", "--watch-interval", "off") as (base, proc, lines):
        reader = {"Authorization": f"Bearer {CLIENT_KEYS['READER_KEY']}"}
        requests: list[tuple[str, str, dict[str, str], int]] = [
            ("GET", "/v1/posthog/projects/1/notebooks?limit=2", reader, 200),
            ("GET", "/v1/observable/notebooks?type=public,shared&limit=2", reader, 200),  # cookies upstream
            ("GET", "/v1/posthog/projects/1/notebooks", {"X-API-Key": env["POSTHOG_API_KEY"]}, 401),  # wrong key
            ("GET", "/v1/posthog/projects/1/notebooks", {}, 401),
            ("DELETE", f"/v1/posthog/projects/1/notebooks/{short_id}", reader, 403),
            ("GET", "/v1/nothing", reader, 404),
            ("GET", f"/v1/posthog/projects/1/notebooks/{short_id}/activity", reader, 502),  # upstream 401
            ("POST", "/admin/reload", {"X-API-Key": CLIENT_KEYS["ADMIN_KEY"]}, 422),
        ]
        sandboxes.posthog_state.apply_switches(
            {"faults": {f"/api/projects/1/notebooks/{short_id}/activity": {"status": 401}}}
        )
        config.write_text(broken(config.read_text()))
        async with aiohttp.ClientSession() as session:
            for i, (method, url, headers, expected) in enumerate(requests):
                async with session.request(method, base + url, headers={**headers, "X-Request-ID": f"leak-{i}"}) as r:
                    bodies.append(await r.text())
                    assert r.status == expected, (url, r.status, bodies[-1])
            proc.send_signal(signal.SIGHUP)  # an invalid reload is logged at error level
            await asyncio.sleep(0.3)
            async with session.get(base + "/metrics") as r:
                bodies.append(await r.text())
    output = "".join(lines)
    for secret in secrets:
        assert secret not in output, "a secret reached the log"
        for body in bodies:
            assert secret not in body, "a secret reached an error body or /metrics"
    records = [json.loads(ln) for ln in lines]  # every line is one JSON object
    access = {r["request_id"]: r for r in records if r.get("event") == "request"}
    for i, (method, _url, _h, expected) in enumerate(requests[:-1]):  # /admin/reload is not a stable request
        rec = access[f"leak-{i}"]
        assert rec["method"] == method and rec["status"] == expected and rec["level"] == "info"
        assert {"ts", "route", "client", "upstream_status", "duration_ms", "upstream_ms", "cache"} <= set(rec)
    assert access["leak-0"]["client"] == "reader" and access["leak-0"]["route"] == "posthog_notebooks"
    assert access["leak-4"]["client"] == "reader" and access["leak-4"]["error"] == "method_not_allowed_for_key"
    assert access["leak-6"]["upstream_status"] == 401 and access["leak-6"]["error"] == "upstream_auth_rejected"
    assert any(r["level"] == "error" and "config reload failed" in r["message"] for r in records)


async def test_log_level_warning_keeps_errors_and_drops_access_lines(
    sandboxes: Sandboxes, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(ROUTES.read_text())
    async with serve(config, sandbox_env, "--log-level", "warning", "--watch-interval", "off") as (base, proc, lines):
        async with aiohttp.ClientSession() as session, session.get(base + "/v1/posthog/projects/1/notebooks") as r:
            assert r.status == 200
        config.write_text(broken(config.read_text()))
        proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if lines:
                break
            await asyncio.sleep(0.05)
    records = [json.loads(ln) for ln in lines]
    assert records and all(r["level"] in ("warning", "error") for r in records)
    assert not any(r.get("event") == "request" for r in records)
    out = run("serve", str(config), "--log-level", "verbose")
    assert out.returncode == 2 and "'verbose' is not one of debug, info, warning, error" in out.stderr
