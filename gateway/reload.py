"""Reload routes.yaml when the file changes: poll, let the file settle, validate it whole.

Polling ``stat`` (no inotify dependency) works on every filesystem, including the
bind mounts and ConfigMap symlink swaps that event APIs miss.  A change is acted on
only once the file has stopped changing for one poll interval, and the bytes are
used only if the file did not change while they were read, so an editor's
half-written save is not loaded.  Should a torn file still be read (a writer that
pauses mid-file), it is validated like any other: refused, logged and counted, with
the old config serving, and retried on the file's next change.  Writing the file
atomically (write a temp file, then rename) avoids even that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from gateway.config import ConfigError
from gateway.digest import digest

log = logging.getLogger("gateway.reload")

#: (device, inode, size, mtime in ns): changes on an in-place write and on a rename over the file
Signature = tuple[int, int, int, int] | None
_UNKNOWN: Signature = (-1, -1, -1, -1)


def signature(path: Path) -> Signature:
    try:
        st = os.stat(path)  # follows symlinks: a swapped ConfigMap target counts as a change
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class FileWatcher:
    """Calls ``apply(text)`` with each new, settled content of ``path``.

    ``apply`` validates and swaps (``Gateway.reload``); a ``ConfigError`` from it means
    the content was refused, and the same content is not tried again.  ``served``
    returns the digest being served, so a file already loaded by SIGHUP or the admin
    endpoint is not loaded twice, unless ``failing``: the last reload failed, and the
    file now holds what is served again (an invalid save undone).

    ``reread`` loads the file by its path (``Gateway.reload``), for a file that is gone or
    cannot be read: the gateway refuses it as it would a bad edit, so the failure is
    counted and shown (the reload metrics, ``/status``, RoutegateConfigReloadFailed), once
    per state of the file, not only logged.
    """

    def __init__(
        self,
        path: str | Path,
        apply: Callable[[str], object],
        served: Callable[[], str],
        *,
        interval: float = 1.0,
        failing: Callable[[], bool] = lambda: False,
        reread: Callable[[], object] | None = None,
    ) -> None:
        self.path = Path(path)
        self.apply = apply
        self.served = served
        self.failing = failing
        self.reread = reread
        self.interval = interval
        self._seen: Signature = _UNKNOWN  # the first poll compares the file with what is served
        self._refused: str | None = None
        self._unreadable: Signature = _UNKNOWN  # a file state whose read failed, counted once

    async def run(self) -> None:
        """Poll forever (until cancelled); an unexpected error is logged and polling goes on."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("watching %s failed; will try again", self.path)

    async def poll(self) -> bool:
        """One look at the file; True when a new config was applied."""
        sig = signature(self.path)
        if sig == self._seen:
            return False
        while True:  # settle: unchanged for one whole interval
            await asyncio.sleep(self.interval)
            again = signature(self.path)
            if again == sig:
                break
            sig = again
        if sig is None:
            self._seen = sig
            log.error("routes file %s is gone; still serving the previous config", self.path)
            self._refuse(sig)
            return False
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.error("cannot read routes file %s (%s); still serving the previous config", self.path, exc)
            self._refuse(sig)
            return False  # _seen unchanged: the next poll tries again (counted once, above)
        if signature(self.path) != sig:
            return False  # written to while we read: the next poll waits for it to settle again
        self._seen = sig
        self._unreadable = _UNKNOWN  # read again: a later loss of the file is counted again
        new = digest(text)
        if new == self._refused or (new == self.served() and not self.failing()):
            return False
        # the file back to what is served after a refused save: reloaded, so that the failure
        # (and the alert on it) is cleared by a success, not left standing over a good file
        log.info("routes file %s changed (%s); reloading", self.path, new)
        try:
            self.apply(text)
        except ConfigError:
            self._refused = new  # Gateway.reload has logged and counted it
            return False
        self._refused = None
        return True

    def _refuse(self, sig: Signature) -> None:
        """A file that is gone or unreadable, counted as a refused reload once per state of the file."""
        if self.reread is None or sig == self._unreadable:
            return
        self._unreadable = sig
        self._refused = None  # whatever comes back next is tried, even the content refused before
        with contextlib.suppress(ConfigError):  # Gateway.reload has logged and counted it
            self.reread()
