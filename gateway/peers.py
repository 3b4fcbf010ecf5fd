"""``gateway serve --workers N``: an admin call reaches every worker, not only the one that took it.

The kernel hands each connection to one worker, so ``POST /admin/reload`` or
``/admin/cache/purge`` alone would change one worker's config or cache and leave the
others serving the old one.  So each worker also listens on a Unix socket named by its
pid, in a directory only the gateway's user can enter (made by the supervisor before it
forks).  The worker that takes an admin call applies it, sends it to every other
worker's socket (with the caller's key; a reload carries the routes text this worker
accepted, so all apply the same text even if the file changes meanwhile), and answers
once all have: when the operator has the answer, no worker still serves what was purged
or replaced.  A socket whose worker has died refuses the connection and is skipped: its
replacement starts with an empty cache and the current config (below).

The directory also keeps the last routes text any worker accepted (at start or by a
reload).  A worker binds its socket first, then reads that text, then serves: a reload
relayed before the bind is in the text it reads, one relayed after it waits in the
socket's backlog.  So a worker that replaces a dead one serves what the others serve,
not what the supervisor read at start, nor a file broken since.  A relayed reload that
waited there while a newer text was accepted is refused (409), not applied late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway import jsonio
from gateway.config import Config, ConfigError, parse_config

log = logging.getLogger("gateway.peers")

#: how long one worker may take to apply a relayed admin call
RELAY_TIMEOUT = 10.0
_LAST_GOOD = "last-good.yaml"
#: what a relayed call keeps of the caller's request: its key (checked again by every worker)
_RELAYED_HEADERS = ("Authorization", "X-API-Key")
#: a connection that fails this way means the worker is gone (anything else is reported)
_GONE = (ConnectionRefusedError, FileNotFoundError)
#: Linux pids have at most 7 digits (pid_max is at most 2**22)
_LONGEST_PID = 9_999_999


def runtime_parent() -> str | None:
    """Where the sockets' directory goes: a runtime directory if there is one, else ``$TMPDIR``.

    systemd's ``RuntimeDirectory=`` (``$RUNTIME_DIRECTORY``) or the user's ``$XDG_RUNTIME_DIR``
    are never aged out; ``/tmp`` is (systemd-tmpfiles removes what has not changed for 10
    days), and a removed socket would silently cut a long-idle worker off from admin calls.
    """
    for name in ("RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"):
        first = os.environ.get(name, "").split(":")[0]  # RUNTIME_DIRECTORY may list several
        if first and os.path.isdir(first) and os.access(first, os.W_OK | os.X_OK):
            return first
    return None  # tempfile's choice: $TMPDIR, else /tmp


def make_directory() -> Path:
    """The supervisor's private directory for the workers' sockets (mode 0700).

    Raises OSError, having removed it again, when a worker's socket cannot be made there
    (a path too long for a Unix socket, say): better at start than in every worker.
    """
    directory = Path(tempfile.mkdtemp(prefix="routegate-workers-", dir=runtime_parent()))
    probe = Peers(directory, pid=_LONGEST_PID)
    try:
        probe.listen().close()
        probe.socket.unlink()
    except OSError:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return directory


@dataclass(frozen=True, slots=True)
class PeerAnswer:
    pid: int
    status: int
    body: Mapping[str, Any]


class Peers:
    """This worker's socket in the shared directory, and the way to the others'."""

    def __init__(self, directory: Path, pid: int | None = None) -> None:
        self.directory = directory
        self.pid = os.getpid() if pid is None else pid
        self.socket = directory / f"{self.pid}.sock"

    def listen(self) -> socket.socket:
        """This worker's socket, bound and listening (connections wait in its backlog until it serves)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.socket))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def relayed(self, request: web.Request) -> bool:
        """True when another worker relayed this call (it came in on this worker's socket)."""
        transport = request.transport
        return transport is not None and transport.get_extra_info("sockname") == str(self.socket)

    def others(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.glob("*.sock"):
            if path.stem.isdigit() and int(path.stem) != self.pid:
                found.append((int(path.stem), path))
        return sorted(found)

    async def relay(
        self, request: web.Request, request_id: str, body: bytes, content_type: str | None
    ) -> list[PeerAnswer]:
        """The admin call, sent to every other live worker at once; their answers (dead ones skipped)."""
        headers = {name: request.headers[name] for name in _RELAYED_HEADERS if name in request.headers}
        headers["X-Request-ID"] = request_id  # the relayed calls log under the caller's request
        if content_type is not None:
            headers["Content-Type"] = content_type
        others = self.others()
        answers = await asyncio.gather(
            *(_send(path, request.method, str(request.rel_url), headers, body) for _, path in others),
            return_exceptions=True,
        )
        out = []
        for (pid, _), answer in zip(others, answers, strict=True):
            if isinstance(answer, BaseException):
                answer = (500, _error("relay_failed", f"relaying failed ({type(answer).__name__})"))
            if answer is not None:
                out.append(PeerAnswer(pid, *answer))
        return out

    def remember(self, config: Config) -> None:
        """Keep ``config``'s text as the last good one (written whole, then renamed over the old)."""
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".last-good-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(config.source)
            os.replace(tmp, self.directory / _LAST_GOOD)
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            log.warning("cannot keep the last good routes text in %s: %s", self.directory, exc)

    def last_good(self) -> str | None:
        """The last routes text a worker accepted (None if it cannot be read)."""
        try:
            return (self.directory / _LAST_GOOD).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def current_config(self, started_with: Config, env: Mapping[str, str] | None = None) -> Config:
        """What a (re)started worker serves: the last text a worker accepted, which the others serve."""
        text = self.last_good()
        try:
            if text is not None:
                return parse_config(text, started_with.path, env)
        except ConfigError as exc:
            log.error("the last good routes text no longer loads (%s); serving %s", exc, started_with.digest)
            return started_with
        log.error("cannot read the last good routes text in %s; serving %s", self.directory, started_with.digest)
        return started_with


def forget(directory: Path, pid: int) -> None:
    """The supervisor removes a dead worker's socket, so no relay waits on it."""
    with contextlib.suppress(OSError):
        (directory / f"{pid}.sock").unlink()


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


async def _send(
    path: Path, method: str, target: str, headers: Mapping[str, str], body: bytes
) -> tuple[int, Mapping[str, Any]] | None:
    """(status, JSON body) of one worker's answer; None if the worker is gone."""
    timeout = aiohttp.ClientTimeout(total=RELAY_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path)), timeout=timeout) as session,
            session.request(method, f"http://worker{target}", headers=headers, data=body) as resp,
        ):
            raw = await resp.read()
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, _GONE):
            return None  # its replacement has a fresh cache and reads the last good text
        return 502, _error("worker_unreachable", f"cannot connect ({exc.os_error.strerror or exc.os_error})")
    except TimeoutError:
        return 504, _error("worker_timeout", f"no answer within {RELAY_TIMEOUT:g}s")
    except aiohttp.ClientError as exc:
        return 502, _error("worker_unreachable", f"the connection failed ({type(exc).__name__})")
    try:
        parsed = jsonio.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError):
        parsed = {}
    return resp.status, parsed if isinstance(parsed, dict) else {}
