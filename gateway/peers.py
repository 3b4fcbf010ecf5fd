"""``gateway serve --workers N``: an admin call reaches every worker, not only the one that took it.

The kernel hands each connection to one worker, so ``POST /admin/reload`` or
``/admin/cache/purge`` alone would change one worker's config or cache and leave the
others serving the old one.  So each worker also listens on a Unix socket named by its
pid, in a directory only the gateway's user can enter (made by the supervisor before it
forks).  The worker that takes an admin call applies it, sends the same call (the
caller's own key and body) to every other worker's socket, and answers once all have:
when the operator has the answer, no worker still serves what was purged or replaced.
A socket whose worker has died refuses the connection and is skipped: its replacement
starts with an empty cache and the current config (below).

The directory also keeps the last routes text any worker accepted (at start or by a
reload).  A worker started to replace a dead one serves that text, the config the workers
it joins serve, rather than what the supervisor read at start or a file broken since.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
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
#: what a relayed call keeps of the caller's request: its key, its body's type, its id
_RELAYED_HEADERS = ("Authorization", "X-API-Key", "Content-Type", "X-Request-ID")


def make_directory() -> Path:
    """The supervisor's private directory for the workers' sockets (mode 0700)."""
    return Path(tempfile.mkdtemp(prefix="routegate-workers-"))


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

    async def relay(self, request: web.Request, body: bytes) -> list[PeerAnswer]:
        """The same admin call, sent to every other live worker at once; their answers (dead ones skipped)."""
        headers = {name: request.headers[name] for name in _RELAYED_HEADERS if name in request.headers}
        answers = await asyncio.gather(
            *(_send(pid, path, request.method, str(request.rel_url), headers, body) for pid, path in self.others())
        )
        return [a for a in answers if a is not None]

    def remember(self, config: Config) -> None:
        """Keep ``config``'s text as the last good one (written whole, then renamed over the old)."""
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".last-good-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(config.source)
            os.replace(tmp, self.directory / _LAST_GOOD)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            log.warning("cannot keep the last good routes text in %s: %s", self.directory, exc)

    def current_config(self, started_with: Config) -> Config:
        """What a (re)started worker serves: the last text a worker accepted, which the others serve."""
        try:
            return parse_config((self.directory / _LAST_GOOD).read_text(encoding="utf-8"), started_with.path)
        except (OSError, ConfigError) as exc:
            log.error("cannot read the last good routes text (%s); serving %s", exc, started_with.digest)
            return started_with


def forget(directory: Path, pid: int) -> None:
    """The supervisor removes a dead worker's socket, so no relay waits on it."""
    with contextlib.suppress(OSError):
        (directory / f"{pid}.sock").unlink()


async def _send(
    pid: int, path: Path, method: str, target: str, headers: Mapping[str, str], body: bytes
) -> PeerAnswer | None:
    timeout = aiohttp.ClientTimeout(total=RELAY_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path)), timeout=timeout) as session,
            session.request(method, f"http://worker{target}", headers=headers, data=body) as resp,
        ):
            raw = await resp.read()
    except aiohttp.ClientConnectorError:
        return None  # the worker is gone (its replacement has a fresh cache and reads the file)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return PeerAnswer(pid, 504, {"error": {"message": f"no answer ({type(exc).__name__})"}})
    try:
        parsed = jsonio.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError):
        parsed = {}
    return PeerAnswer(pid, resp.status, parsed if isinstance(parsed, dict) else {})
