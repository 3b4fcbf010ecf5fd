"""How long an upstream asked us to wait: the one reading of ``Retry-After`` and PostHog's throttle detail.

Resilience paces and retries by it; the proxy relays it to the client of a 429. Both read it
here so the two can never disagree about what the upstream said.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

#: PostHog's throttle detail: "Request was throttled. Expected available in 3 seconds."
_AVAILABLE_IN = re.compile(r"available in (\d+(?:\.\d+)?) seconds?")
#: how much of a body is searched for the detail (a throttle answer is short)
_BODY_PREFIX = 4096


def seconds(headers: Mapping[str, str], body: bytes | str = b"") -> float | None:
    """Seconds to wait: ``Retry-After`` (delta-seconds or an HTTP date), else the body's detail; None if neither."""
    raw = headers.get("Retry-After", "").strip()
    if raw:
        try:
            wait = float(raw)
        except ValueError:
            try:
                wait = parsedate_to_datetime(raw).timestamp() - time.time()
            except (TypeError, ValueError, IndexError):
                wait = math.nan
        if math.isfinite(wait):
            return max(0.0, wait)
    text = body[:_BODY_PREFIX]
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    m = _AVAILABLE_IN.search(text)
    return float(m.group(1)) if m else None


def header_value(headers: Mapping[str, str], body: bytes | str = b"") -> str | None:
    """The ``Retry-After`` to give a client: whole seconds, rounded up (never a date: clocks differ)."""
    wait = seconds(headers, body)
    return None if wait is None else str(math.ceil(wait))
