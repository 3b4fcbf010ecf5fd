"""One run at a time per backup directory: an exclusive ``flock`` on ``DIR/.lock``.

Two runs into one directory would each rewrite ``index.json`` from their own copy, dropping the
other's entries, and one would delete the other's temporary files as stale. The kernel releases
the lock when its holder ends, however it ends (``kill -9`` included), so no stale lock survives a
crash; the file itself stays (removing it would let a third run lock a different file).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = ".lock"


class Busy(Exception):
    """Another process holds the directory's lock."""


class DirLock:
    """Holds ``out/.lock`` exclusively from ``acquire()``, which raises ``Busy`` at once (it never waits)."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Busy(str(self.path)) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None
