"""What the run says on stderr: one line per event, never cut through by the progress bar."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    """A line on stderr; on a terminal it first clears the progress bar it would cut through."""
    prefix = "\r\033[K" if sys.stderr.isatty() else ""
    print(prefix + message, file=sys.stderr, flush=True)


def one_line(text: str) -> str:
    return " ".join(text.split())
