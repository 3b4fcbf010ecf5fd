"""How far a source has got, on stderr."""

from __future__ import annotations

import sys
import time

from .console import log


class Progress:
    """One stderr line per source: a bar on a terminal, periodic lines otherwise."""

    WIDTH = 24

    def __init__(self, name: str) -> None:
        self.name = name
        self.tty = sys.stderr.isatty()
        self.listed = self.fetched = self.unchanged = self.gone = self.failed = 0
        self.listing = True
        self._shown = 0.0

    @property
    def done(self) -> int:
        return self.fetched + self.unchanged + self.gone + self.failed

    def line(self) -> str:
        total = max(self.listed, 1)
        filled = self.WIDTH * self.done // total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        more = "+" if self.listing else ""
        return (
            f"{self.name} [{bar}] {self.done}/{self.listed}{more}  "
            f"fetched {self.fetched}, unchanged {self.unchanged}, failed {self.failed}"
        )

    def show(self, final: bool = False) -> None:
        t = time.monotonic()
        if not final and t - self._shown < (0.1 if self.tty else 2.0):
            return
        self._shown = t
        if self.tty:
            sys.stderr.write("\r\033[K" + self.line() + ("\n" if final else ""))
            sys.stderr.flush()
        else:
            log(self.line())
