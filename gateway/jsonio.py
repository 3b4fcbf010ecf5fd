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
    """Raises ValueError (``json.JSONDecodeError``) or UnicodeDecodeError like ``json.loads``.

    The error raised holds no copy of the input: ``json.JSONDecodeError.doc`` (and the
    traceback's frames) would keep the whole decoded text, three times a large body, alive
    for as long as anything holds the error.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass  # outside the handler: the error raised below must not chain to orjson's (its doc)
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        where = (exc.msg, exc.pos, exc.lineno, exc.colno)
    raise _slim_error(*where)


def _slim_error(msg: str, pos: int, lineno: int, colno: int) -> json.JSONDecodeError:
    """A ``JSONDecodeError`` with the same message and position and an empty ``doc``."""
    err = json.JSONDecodeError.__new__(json.JSONDecodeError)
    ValueError.__init__(err, f"{msg}: line {lineno} column {colno} (char {pos})")
    err.msg, err.doc, err.pos, err.lineno, err.colno = msg, "", pos, lineno, colno
    return err


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
