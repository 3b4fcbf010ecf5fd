"""Raw-socket requests and the fake-upstream config shared by the hostile-input tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient

FAKE_YAML = """
server:
  max_body_bytes: 1KiB
  client_timeouts: {{headers: 1s, body: 1s}}
upstreams:
  fake:
    base_url: {url}
    timeouts: {{connect: 1s, read: 0.5s, total: 3s}}
    retries: {{attempts: 2, backoff: 5ms, max_backoff: 10ms}}
    max_response_bytes: 64KiB
    max_redirects: 3
    headers: {{X-Static: static-value}}
    auth: {{bearer: {{env: FAKE_KEY}}}}
routes:
  get_thing:
    stable: GET /v1/things/{{name}}
    upstream: fake
    params: {{q: {{}}}}
    targets: ["GET /things/{{name}}?q={{q}}"]
  create_thing:
    stable: POST /v1/things
    upstream: fake
    targets: ["POST /things"]
"""


class Raw:
    """One raw HTTP/1.1 exchange: status, lower-cased headers and body (``status`` 0: closed)."""

    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}

    def json(self) -> Any:
        return json.loads(self.body)


async def read_response(reader: asyncio.StreamReader, timeout: float = 5.0) -> Raw:
    """One response framed by its Content-Length (the server may keep the socket open)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    resp = Raw(head)
    resp.body = await asyncio.wait_for(reader.readexactly(int(resp.headers.get("content-length", "0"))), timeout)
    return resp


async def raw(gw: TestClient[Any, Any], data: bytes, timeout: float = 5.0) -> Raw:
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    try:
        writer.write(data)
        await writer.drain()
        return Raw(await asyncio.wait_for(reader.read(), timeout))
    finally:
        writer.close()


def request(line: str, *headers: str, body: bytes = b"") -> bytes:
    head = "\r\n".join([line, "Host: localhost", "Connection: close", *headers])
    return head.encode("latin-1") + b"\r\n\r\n" + body


async def assert_healthy(gw: TestClient[Any, Any], normal: str) -> None:
    resp = await gw.get("/healthz")
    assert resp.status == 200
    resp = await gw.get(normal)
    assert resp.status == 200, await resp.text()


def assert_json_error(status: int, body: Any, expected: tuple[int, ...]) -> None:
    assert status in expected, (status, body)
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    assert body["error"]["code"] and body["error"]["message"]
