"""The one fingerprint of an upstream credential: equal for equal secrets, never the secret.

The response cache keys entries by it (so one credential's answers are not served to another)
and resilience paces and holds off per credential by it. It is unsalted so that every worker,
and every gateway sharing a Redis, computes the same value for the same credential.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping


def credential_fingerprint(headers: Mapping[str, str]) -> str:
    """32 hex digits identifying the credential ``headers`` (names compared case-insensitively)."""
    return _digest(tuple(sorted((name.lower(), value) for name, value in headers.items())))


@functools.lru_cache(maxsize=256)
def _digest(items: tuple[tuple[str, str], ...]) -> str:
    h = hashlib.sha256(b"routegate-credential\x00")
    for name, value in items:
        h.update(f"{name}\x00{value}\x00".encode())
    return h.hexdigest()[:32]
