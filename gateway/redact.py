"""The one redactor: every configured secret value replaced by ``[redacted]`` in text.

Upstream error bodies, redirect targets and content types can echo what the gateway
sent (a session cookie, a bearer token).  Every message derived from an upstream
passes through a ``Redactor`` before it reaches a client, ``/status``, the logs or the
metrics, and the log formatter runs the same one over each line as a second line of
defence.  One threshold and one placeholder everywhere, so what is hidden in an error
body is hidden in the log line about it too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

from gateway.auth import Credentials, secrets_of
from gateway.config import Config

REDACTED = "[redacted]"
#: values shorter than this are not redacted: they would blank out ordinary words and numbers
MIN_SECRET_LENGTH = 6
#: how long a resolved secret list is reused by ``__call__`` (secrets in files may be renewed meanwhile)
REFRESH_SECONDS = 5.0


def secret_values(config: Config, credentials: Credentials) -> list[str]:
    """Every secret the config refers to, as currently resolved: upstream credentials, client and admin keys."""
    values: list[str] = []
    for upstream in config.upstreams.values():
        values += secrets_of(upstream.auth, credentials)
    for key in (*config.access.clients, *config.access.admins):
        if (v := credentials.resolve(key.secret)) is not None:
            values.append(v)
    return values


class Redactor:
    """Replaces known secret values (raw and JSON-escaped) in text."""

    def __init__(self, source: Callable[[], Iterable[str]] | None = None, clock: Callable[[], float] = time.monotonic):
        self.source = source
        self.clock = clock
        self._values: list[str] = []
        self._stamp = float("-inf")

    def values(self, fresh: bool = False) -> list[str]:
        """The values to hide, longest first; re-resolved every ``REFRESH_SECONDS`` or when ``fresh``."""
        now = self.clock()
        if self.source is not None and (fresh or now - self._stamp >= REFRESH_SECONDS):
            found: set[str] = set()
            for v in self.source():
                if len(v) >= MIN_SECRET_LENGTH:
                    found |= {v, json.dumps(v)[1:-1]}
            self._values = sorted(found, key=len, reverse=True)  # longest first: no partial leftovers
            self._stamp = now
        return self._values

    def __call__(self, text: str, fresh: bool = False) -> str:
        """``fresh``: resolve the secrets now (error paths: a secret renewed a second ago is hidden too)."""
        for v in self.values(fresh):
            if v in text:
                text = text.replace(v, REDACTED)
        return text
