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
import re
import time
from collections.abc import Callable, Iterable
from urllib.parse import quote

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
    """Replaces known secret values in text: raw, JSON-escaped or percent-encoded, in any letter case.

    Any case, because what an upstream echoes may come back lowercased (a content type
    is compared lowercased, a host name is); percent-encoded, because it may come back
    inside a URL.  The common case, no secret in the text, costs one ``lower()`` and a
    substring test per value: this runs on every access-log line.
    """

    def __init__(self, source: Callable[[], Iterable[str]] | None = None, clock: Callable[[], float] = time.monotonic):
        self.source = source
        self.clock = clock
        self._lowered: list[str] = []
        self._pattern: re.Pattern[str] | None = None
        self._stamp = float("-inf")

    def values(self, fresh: bool = False) -> list[str]:
        """The forms to hide (lowercased), longest first; re-resolved every ``REFRESH_SECONDS`` or when ``fresh``."""
        now = self.clock()
        if self.source is not None and (fresh or now - self._stamp >= REFRESH_SECONDS):
            found: set[str] = set()
            for v in self.source():
                if len(v) >= MIN_SECRET_LENGTH:
                    found |= {v.lower(), json.dumps(v)[1:-1].lower(), quote(v, safe="").lower()}
            self._lowered = sorted(found, key=len, reverse=True)  # longest first: no partial leftovers
            self._pattern = re.compile("|".join(map(re.escape, self._lowered)), re.IGNORECASE) if found else None
            self._stamp = now
        return self._lowered

    def __call__(self, text: str, fresh: bool = False) -> str:
        """``fresh``: resolve the secrets now (error paths: a secret renewed a second ago is hidden too)."""
        lowered = self.values(fresh)
        if self._pattern is None:
            return text
        low = text.lower()
        if any(v in low for v in lowered):
            text = self._pattern.sub(REDACTED, text)
        return text
