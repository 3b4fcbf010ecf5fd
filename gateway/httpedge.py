"""The HTTP edge: what arrives before routing, and what the parser refuses.

* ``check_request_line``: only HTTP/1.0 and HTTP/1.1 are spoken (aiohttp's parser
  also takes ``HTTP/0.9`` and ``HTTP/2.0`` request lines and would answer them as if
  they were 1.x), so anything else is a 505; an absolute-form request target
  (``GET http://host/path``) is a 400: the gateway is an origin server, not a forward
  proxy, and the host in such a target would be ignored silently.
* ``RejectLog``: aiohttp logs every request its parser rejects as an error with a
  traceback (logger ``aiohttp.server``); port scanners and broken clients made that
  180 MB of log a minute.  It stands in for that logger: a reject is one info line
  without a traceback, at most ``burst`` of them per ``window`` seconds, and one
  summary line counting the rest.  Anything else goes to the real logger unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.errors import BadRequest, GatewayError

SUPPORTED_VERSIONS = frozenset({(1, 0), (1, 1)})
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
#: reject lines written in full per window; the rest are counted in one summary line
REJECT_BURST = 10
REJECT_WINDOW = 10.0
#: how much of the parser's reason (which may quote the client's bytes) a line carries
REASON_CHARS = 160


class VersionNotSupported(GatewayError):
    status = 505
    default_code = "http_version_not_supported"


def check_request_line(request: web.Request) -> None:
    """505 for an HTTP version other than 1.0/1.1, 400 for an absolute-form target."""
    if request.version not in SUPPORTED_VERSIONS:
        major, minor = request.version
        raise VersionNotSupported(
            f"HTTP/{major}.{minor} is not supported; send HTTP/1.1", headers={"Connection": "close"}
        )
    raw = request.raw_path
    if not raw.startswith("/") and _ABSOLUTE.match(raw):
        raise BadRequest(
            "send the request target as a path (/v1/...), not an absolute URL: this is not a forward proxy",
            code="absolute_form_target",
        )


class RejectLog:
    """A stand-in for aiohttp's ``aiohttp.server`` logger that logs parser rejects briefly and rate-limited."""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        burst: int = REJECT_BURST,
        window: float = REJECT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger or logging.getLogger("aiohttp.server")
        self.out = logging.getLogger("gateway.http")
        self.burst = burst
        self.window = window
        self.clock = clock
        self._start = float("-inf")
        self._logged = 0
        self._suppressed = 0
        self._timer: asyncio.TimerHandle | None = None

    def exception(self, msg: object, *args: Any, exc_info: Any = None, **kw: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.rejected(exc_info, args)
        else:
            self.logger.exception(msg, *args, exc_info=exc_info if exc_info is not None else True, **kw)

    def debug(self, msg: object, *args: Any, exc_info: Any = None, **kw: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):  # non-HTTP bytes on the first request (TLS, scanners)
            self.rejected(exc_info, args)
        else:
            self.logger.debug(msg, *args, exc_info=exc_info, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.logger, name)

    def rejected(self, exc: HttpProcessingError, args: tuple[Any, ...]) -> None:
        """One refused request: an info line while under the burst, else counted for the summary."""
        now = self.clock()
        if now - self._start >= self.window:
            self.flush()
            self._start, self._logged = now, 0
        if self._logged >= self.burst:
            self._suppressed += 1
            if self._timer is None:
                self._schedule()
            return
        self._logged += 1
        if self.out.isEnabledFor(logging.INFO):
            reason = " ".join(str(exc.message).split())[:REASON_CHARS]
            fields = {
                "event": "rejected",
                "message": "the HTTP parser rejected a request",
                "client": str(args[0]) if args else None,
                "status": exc.code,
                "reason": reason or type(exc).__name__,
            }
            self.out.info(
                "HTTP parser rejected a request from %s: %s", fields["client"], reason, extra={"fields": fields}
            )

    def flush(self) -> None:
        """The summary of the rejects not logged one by one (at the end of their window)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._suppressed:
            return
        count, self._suppressed = self._suppressed, 0
        fields = {
            "event": "rejected_summary",
            "message": f"{count} more requests rejected by the HTTP parser were not logged one by one",
            "suppressed": count,
            "window_seconds": self.window,
        }
        self.out.info("%s", fields["message"], extra={"fields": fields})

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test): the next reject after the window writes the summary
        delay = max(0.0, self._start + self.window - self.clock())
        self._timer = loop.call_later(delay, self.flush)
