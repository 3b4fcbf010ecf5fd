"""JSON on the hot path: orjson when it can, the standard library when it cannot.

Every upstream body is parsed and most stable responses serialized, so JSON is a
large share of a request's CPU; orjson does it several times faster.  It refuses a
few things the standard library accepts (integers beyond 64 bits, lone surrogates,
non-string keys), so on its error the standard library gets the same input.

What is never JSON is refused by both paths alike: ``NaN``/``Infinity`` (RFC 8259 has
no such numbers; an upstream sending them is broken) and nesting deeper than orjson's
1024 levels (``TooDeep``, never a ``RecursionError``: a hostile body must not be a 500).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import orjson

#: nesting orjson parses; deeper is refused (the standard library would hit Python's recursion limit)
MAX_DEPTH = 1024


class TooDeep(ValueError):
    """JSON nested deeper than ``MAX_DEPTH`` levels."""

    def __init__(self) -> None:
        super().__init__(f"JSON nested deeper than {MAX_DEPTH} levels")


class _NotJson(ValueError):
    """NaN, Infinity or -Infinity: Python's json reads them, RFC 8259 does not."""


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON")


def loads(data: bytes | bytearray | str) -> Any:
    """Raises ValueError (``json.JSONDecodeError``, ``TooDeep``) or UnicodeDecodeError like ``json.loads``.

    The error raised holds no copy of the input: ``json.JSONDecodeError.doc`` (and the
    traceback's frames) would keep the whole decoded text, three times a large body, alive
    for as long as anything holds the error.  So every error is raised outside the handler
    that caught the parser's own.
    """
    deep = False
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        deep = "depth" in str(exc)
    if deep:
        raise TooDeep()
    where: tuple[str, int, int, int] | None = None
    constant = ""
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        deep = True
    except json.JSONDecodeError as exc:
        where = (exc.msg, exc.pos, exc.lineno, exc.colno)
    except _NotJson as exc:
        constant = str(exc)
    if deep:
        raise TooDeep()
    if where is None:
        raise ValueError(constant)
    raise _slim_error(*where)


def _slim_error(msg: str, pos: int, lineno: int, colno: int) -> json.JSONDecodeError:
    """A ``JSONDecodeError`` with the same message and position and an empty ``doc``."""
    err = json.JSONDecodeError.__new__(json.JSONDecodeError)
    ValueError.__init__(err, f"{msg}: line {lineno} column {colno} (char {pos})")
    err.msg, err.doc, err.pos, err.lineno, err.colno = msg, "", pos, lineno, colno
    return err


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON (no ASCII escaping), as ``json.dumps(separators=(",", ":"), ensure_ascii=False)``.

    Anything ``loads`` returned can be written: orjson stops at 255 levels, so deeper
    values go to the standard library with room for ``MAX_DEPTH`` more frames.
    """
    try:
        return orjson.dumps(data)
    except TypeError:  # orjson.JSONEncodeError: a big integer, a non-string key, deep nesting, ...
        pass
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 2 * MAX_DEPTH + 64)  # one event-loop thread: nothing else runs meanwhile
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        try:
            return text.encode()
        except UnicodeEncodeError:  # a lone surrogate ("\ud800" is valid JSON text): keep it escaped
            return json.dumps(data, separators=(",", ":")).encode()
    except RecursionError:
        raise TooDeep() from None
    finally:
        sys.setrecursionlimit(limit)


def dumps_text(data: Any) -> str:
    """One log line's JSON: like ``dumps``, anything unknown written as its ``str()``."""
    try:
        return orjson.dumps(data, default=str).decode()
    except TypeError:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
