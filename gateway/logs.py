"""Logging: one JSON object per line on stderr, with every configured secret redacted.

Log shippers parse JSON lines without a grok pattern, and a field that is always
there (``request_id``, ``route``) can be queried.  The gateway never logs headers or
secret values on purpose; the redaction here (``gateway.redact``, the same redactor that
cleans upstream error text) is the second line of defence for the message nobody
thought about (an exception text that quotes a header, say).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

from gateway import jsonio
from gateway.redact import REDACTED as REDACTED
from gateway.redact import Redactor
from gateway.redact import secret_values as secret_values
from gateway.trace import RequestTrace

LEVELS = ("debug", "info", "warning", "error")
#: a JSON string literal (escapes what orjson escapes: quote, backslash, control characters)
_quote: Any = encode_basestring


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message" | the record's ``fields``, "exc"?}`` per record."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        else:
            payload["message"] = record.getMessage()
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return self.redactor(jsonio.dumps_text(payload))


class AccessLines:
    """The access log's fast path under ``gateway serve``: the same JSON line, without a LogRecord.

    Why: building a ``LogRecord`` and passing it through loggers, filters, handler locks
    and the formatter cost more CPU than the rest of a cache hit.  The line written is
    the one ``JsonFormatter`` would write (same keys, order, timestamp and redaction) to
    the same stream.  It is used only while the logging set-up is still the one ``setup``
    made; anything else (a test capturing records, an extra handler) gets real records
    through ``logging`` as usual.

    Lines made in one turn of the event loop go out in one write at the end of that turn
    (under load a write per request was a tenth of a cache hit's cost); no line waits
    longer than that, any other log record first flushes them (order is kept), and so
    does exit.
    """

    def __init__(self, handler: logging.StreamHandler[Any], formatter: JsonFormatter) -> None:
        self.handler = handler
        self.formatter = formatter
        self.root = logging.getLogger()
        self.logger = logging.getLogger("gateway.access")
        self._second = -1
        self._prefix = ""
        self._ms = -1
        self._stamp = ""
        self._pending: list[str] = []

    def usable(self) -> bool:
        """The logging set-up is still the one ``setup`` made (nothing captures or filters access records).

        Lines waiting for the end of this loop turn mean it was a moment ago: a set-up changes
        between requests, not inside the turn that answers them, so the checks are made once a turn."""
        if self._pending:
            return True
        root, logger = self.root, self.logger
        return (
            len(root.handlers) == 1
            and root.handlers[0] is self.handler
            and not logger.handlers
            and logger.propagate
            and not logger.filters
            and not root.filters
            and not self.handler.filters
            and self.logger.isEnabledFor(logging.INFO)
        )

    def _timestamp(self) -> str:
        """The line's ``ts``, made once a millisecond (requests of one loop turn share it), its date and
        time once a second."""
        ms = int(time.time() * 1000)
        if ms != self._ms:
            second, milli = divmod(ms, 1000)
            if second != self._second:
                self._second, self._prefix = second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._ms, self._stamp = ms, f"{self._prefix}.{milli:03d}+00:00"
        return self._stamp

    def write(self, fields: dict[str, Any]) -> None:
        payload = {"ts": self._timestamp(), "level": "info"}
        payload["logger"] = "gateway.access"
        payload.update(fields)
        self._add(jsonio.dumps_text(payload))

    def write_request(
        self, rid: str, method: str, path: str, route: str, status: int, duration_ms: float, trace: RequestTrace
    ) -> None:
        """The stable request line (gateway.server.framing), written as ``write`` would write its fields.

        Built as one string: only the strings are escaped (the standard library's C encoder,
        which escapes what orjson does), the numbers are ints and floats rounded to 3 places.
        """
        q = _quote
        upstream_status, client, cache, error = trace.upstream_status, trace.client, trace.cache, trace.error
        upstream_ms = round(trace.upstream_seconds * 1000, 3) if trace.upstream_seconds else 0.0
        self._add(
            f'{{"ts":"{self._timestamp()}","level":"info","logger":"gateway.access","event":"request",'
            f'"request_id":{q(rid)},"method":{q(method)},"path":{q(path)},"route":{q(route)},'
            f'"client":{"null" if client is None else q(client)},"status":{status:d},'
            f'"upstream_status":{"null" if upstream_status is None else f"{upstream_status:d}"},'
            f'"upstream_calls":{trace.upstream_calls:d},"duration_ms":{duration_ms!r},'
            f'"upstream_ms":{upstream_ms!r},'
            f'"cache":{"null" if cache is None else q(cache)},"error":{"null" if error is None else q(error)}}}'
        )

    def _add(self, line: str) -> None:
        pending = self._pending
        pending.append(line)
        if len(pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop: nothing else will come to flush it
                self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        # redacted here, once for the turn's lines (a secret cannot span two: a line's JSON escapes line breaks)
        text = self.formatter.redactor("\n".join(self._pending) + "\n")
        self._pending.clear()
        handler = self.handler
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.stream.flush()
        except Exception:
            self.logger.exception("cannot write the access log")
        finally:
            handler.release()


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr; access lines still waiting for the end of the loop turn go first."""

    def emit(self, record: logging.LogRecord) -> None:
        if _ACCESS is not None and _ACCESS.handler is self:
            _ACCESS.flush()
        super().emit(record)


_ACCESS: AccessLines | None = None


def access_lines() -> AccessLines | None:
    """The fast path for access lines, if ``setup`` made the logging set-up that is still in place."""
    return _ACCESS if _ACCESS is not None and _ACCESS.usable() else None


def setup(level: str) -> JsonFormatter:
    """Send every log record to stderr as a JSON line at ``level``; returns the formatter (to attach secrets)."""
    formatter = JsonFormatter()
    handler = _Handler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # the JSON lines carry no source line, thread or process: skip gathering them for every record
    # (the logging HOWTO's "Optimization"; os.getpid() alone is a system call per access-log line)
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _ACCESS
    if _ACCESS is not None:
        _ACCESS.flush()
    _ACCESS = AccessLines(handler, formatter)
    return formatter


@atexit.register
def _flush_at_exit() -> None:
    if _ACCESS is not None:
        _ACCESS.flush()
