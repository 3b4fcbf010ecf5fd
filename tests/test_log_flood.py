"""Requests the HTTP parser rejects: one short info line each, rate-limited, never a traceback.

aiohttp logs every such request at error level with a ~800-byte traceback; 228k bad
requests once wrote 180 MB of log in a minute.  Driven through raw sockets, in-process
(log records) and against a real ``gateway serve`` (its stderr).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.httpedge import REJECT_BURST, RejectLog
from gateway.server import GATEWAY
from sandbox.runner import Sandboxes
from tests.conftest import ROUTES
from tests.processes import serve

pytestmark = pytest.mark.hostile

#: things a parser refuses: a bad header line, a bad version, TLS on the plain port, a NUL, a bad method
BAD = [
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    b"GET / HTTP/1.7\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
]


async def _send_bad(host: str, port: int, count: int) -> list[int]:
    """``count`` rejected requests, 20 connections at a time; each answer's status (0: closed)."""

    async def one(i: int) -> int:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(BAD[i % len(BAD)])
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)
            return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
        finally:
            writer.close()

    statuses: list[int] = []
    for start in range(0, count, 20):
        statuses += await asyncio.gather(*(one(i) for i in range(start, min(start + 20, count))))
    return statuses


async def test_rejects_are_brief_rate_limited_info_lines(
    gw: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert gw.app is not None and gw.port is not None
    rejects = gw.app[GATEWAY].rejects
    rejects.window = 0.5  # the summary comes at the end of each window
    statuses = await _send_bad(gw.host, gw.port, 300)
    assert set(statuses) <= {400, 0} and statuses.count(400) >= 250
    await asyncio.sleep(0.7)
    server = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert not server, [r.getMessage() for r in server[:3]]
    assert not [r for r in caplog.records if r.exc_info]
    lines = [getattr(r, "fields", {}) for r in caplog.records if r.name == "gateway.http"]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "gateway.http")
    single = [f for f in lines if f.get("event") == "rejected"]
    summaries = [f for f in lines if f.get("event") == "rejected_summary"]
    assert 1 <= len(single) <= 2 * REJECT_BURST  # the sends may straddle one window boundary
    assert summaries and len(single) + sum(f["suppressed"] for f in summaries) == 300
    first = single[0]
    assert first["client"] == "127.0.0.1" and first["status"] == 400 and 0 < len(first["reason"]) <= 160
    # the gateway still serves
    assert (await gw.get("/healthz")).status == 200


async def test_other_errors_still_reach_aiohttps_logger_with_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log = RejectLog(burst=1, window=60, clock=lambda: 0.0)
    try:
        raise RuntimeError("a handler bug")
    except RuntimeError as exc:
        log.exception("Unhandled exception", exc_info=exc)
    log.debug("Ignored premature client disconnection")
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [r.levelno for r in records] == [logging.ERROR, logging.DEBUG]
    assert records[0].exc_info is not None and records[0].exc_info[0] is RuntimeError


async def test_a_real_process_writes_a_few_lines_for_a_flood_of_bad_requests(
    sandboxes: Sandboxes, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(ROUTES.read_text())
    async with serve(config, sandbox_env, "--watch-interval", "off", "--no-probes") as (base, _proc, lines):
        started = len(lines)
        port = int(base.rsplit(":", 1)[1])
        statuses = await _send_bad("127.0.0.1", port, 500)
        assert statuses.count(400) >= 400
        await asyncio.sleep(0.3)
        during = lines[started:]
    text = "".join(during)
    assert "Traceback" not in text and "aiohttp.server" not in text
    records = [json.loads(ln) for ln in during]
    assert len(records) <= REJECT_BURST + 1 and len(text) < 4096, len(text)
    assert all(r["level"] == "info" and r["logger"] == "gateway.http" for r in records)
    # at shutdown, the count of the rest
    every = [json.loads(ln) for ln in lines[started:]]
    single = [r for r in every if r.get("event") == "rejected"]
    summary = [r for r in every if r.get("event") == "rejected_summary"]
    assert summary and len(single) + sum(r["suppressed"] for r in summary) == 500
