"""The q-weighted lists clients send (``Accept``, ``Accept-Encoding``), read one way for both.

``Accept`` chooses JSON or NDJSON (gateway.ndjson) and ``Accept-Encoding`` gzip or deflate
(gateway.pipeline.conventions); both are ``name;q=weight`` lists (RFC 9110 12.4.2).
"""

from __future__ import annotations

from collections.abc import Iterator


def weighted(header: str) -> Iterator[tuple[str, float]]:
    """Each ``(name, q)`` of ``header``, the name lower-case (media types and codings ignore case), ``q``
    1 when absent; a malformed weight accepts nothing (0) rather than guess."""
    for part in header.split(","):
        name, _, params = part.partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        yield name.strip().lower(), q
