"""JSON on the hot path: orjson when it can, the standard library when it cannot.

Every upstream body is parsed and most stable responses serialized, so JSON is a
large share of a request's CPU; orjson does it several times faster.  It refuses a
few things the standard library accepts (``NaN``, integers beyond 64 bits, lone
surrogates, non-string keys), so on its error the standard library gets the same
input: what is accepted, and the value it parses to, stay exactly as before.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes | bytearray | str) -> Any:
    """Raises ValueError (``json.JSONDecodeError``) or UnicodeDecodeError like ``json.loads``."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON (no ASCII escaping), as ``json.dumps(separators=(",", ":"), ensure_ascii=False)``."""
    try:
        return orjson.dumps(data)
    except TypeError:  # orjson.JSONEncodeError: a big integer, a non-string key, ...
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def dumps_text(data: Any) -> str:
    """One log line's JSON: like ``dumps``, anything unknown written as its ``str()``."""
    try:
        return orjson.dumps(data, default=str).decode()
    except TypeError:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
