"""Scalar value syntaxes of routes.yaml (durations, sizes, rates, shares, templates)."""

from __future__ import annotations

import re
from typing import Any

from gateway.config.model import PathTemplate, Template
from gateway.methods import METHODS

_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def parse_duration(value: Any) -> float:
    """``"5s"``, ``"250ms"``, ``"1h30m"``; a bare number only for 0 (is ``60`` seconds or minutes?)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, 250ms or 1h30m")
    text = str(value).strip().replace(" ", "")
    if isinstance(value, int | float) or text.replace(".", "", 1).isdigit():
        if float(text) == 0:
            return 0.0
        raise ValueError(f"{value!r} has no unit: write {text}s for seconds (or ms, m, h, d)")
    if text.startswith("-"):
        raise ValueError("a duration cannot be negative")
    if not _DURATION.match(text):
        raise ValueError(f"{value!r} is not a duration such as 5s, 250ms or 1h30m")
    return sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))


def parse_size(value: Any) -> int:
    """``"1MiB"``, ``"512kb"`` or a number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1MiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a size such as 1MiB or 64kb")
    unit = m.group(2).lower() if m.group(2) else None
    return int(m.group(1)) * _SIZE_UNITS[unit]


_RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(value: Any) -> tuple[int, float]:
    """``"480/1m"``, ``"480/min"``, ``"5/500ms"`` → (requests, per seconds)."""
    count, slash, per = str(value).partition("/")
    if not slash or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"{value!r} is not a budget such as 480/1m or 4800/1h")
    unit = per.strip().lower()
    seconds = _RATE_UNITS[unit] if unit in _RATE_UNITS else parse_duration(per)
    if seconds <= 0:
        raise ValueError(f"{value!r}: the window must be longer than 0s")
    return int(count), seconds


def parse_ratio(value: Any) -> float:
    """``"20%"`` or ``0.2``, from 0 to 1."""
    if isinstance(value, bool):
        raise ValueError("expected a share such as 20% or 0.2")
    text = str(value).strip()
    try:
        ratio = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a share such as 20% or 0.2") from None
    if not 0 <= ratio <= 1:
        raise ValueError(f"{value!r} must be between 0% and 100%")
    return ratio


def parse_template(raw: str) -> Template:
    parts: list[tuple[bool, str]] = []
    pos = 0
    for m in _PARAM.finditer(raw):
        if m.start() > pos:
            parts.append((False, raw[pos : m.start()]))
        parts.append((True, m.group(1)))
        pos = m.end()
    if pos < len(raw):
        parts.append((False, raw[pos:]))
    return Template(raw, tuple(parts))


def parse_path(raw: str) -> PathTemplate:
    segs = raw.strip("/").split("/") if raw.strip("/") else []
    return PathTemplate(raw, tuple(parse_template(s) for s in segs))


def parse_request_line(text: str) -> tuple[str, str]:
    """``METHOD /path`` (a target's may go on with ``?query``): the method, upper-cased, and the path."""
    parts = text.split()
    if len(parts) != 2:
        raise ValueError(f"expected 'METHOD /path', got {text!r}")
    method, path = parts[0].upper(), parts[1]
    if method not in METHODS:
        raise ValueError(f"unknown HTTP method {parts[0]!r}; use one of {', '.join(sorted(METHODS))}")
    if not path.startswith("/"):
        raise ValueError(f"the path must start with '/', got {path!r}")
    return method, path
