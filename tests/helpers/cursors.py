"""Stable cursors as tests read and forge them (gateway.pagination.cursor): decoded, and signed anew."""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.pagination.cursor import _sign
from gateway.server import GATEWAY


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _payload(cursor: str) -> dict[str, Any]:
    body = cursor.partition(".")[0]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return data


def _secret(gw: TestClient[Any, Any]) -> bytes:
    secret: bytes = gw.app[GATEWAY].runtime.proxy.cursor_secret
    return secret


def _signed(secret: bytes, payload: dict[str, Any]) -> str:
    """A cursor as an attacker who somehow had the key would make it."""
    body = _b64(json.dumps(payload).encode())
    return f"{body}.{_sign(secret, body)}"
