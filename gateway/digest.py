"""The digest of a routes text: ``Config.digest``, and what the file watcher compares with what is served."""

from __future__ import annotations

import hashlib


def digest(text: str) -> str:
    """16 hex digits of the text's SHA-256: shown in /readyz, the metrics and every reload answer."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
