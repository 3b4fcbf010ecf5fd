"""``routegate`` (alias ``gateway``): serve, check, probe and inspect routes.yaml; sandboxes and demo.

Exit codes: 0 success; 1 the routes file is invalid (every problem printed as
file:line: key: message); 2 wrong command-line usage, including ``serve`` refusing
to bind a non-loopback address while no client keys are configured; 3 ``serve``
cannot listen; 4 ``probe`` found a broken route (``EXIT_CODES`` below).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gateway.cli.common import DEFAULT_CONFIG, EXIT_CODES, is_loopback, stdout_gone
from gateway.cli.parser import build_parser

__all__ = ["EXIT_CODES", "build_parser", "is_loopback", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "config_pos"):
        args.config = args.config or args.config_pos or DEFAULT_CONFIG
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        # the reader went away while a command printed (``routegate openapi | head -1``): what it read is all
        # it wanted, so no error (``probe`` catches this itself: its exit code is its verdict)
        stdout_gone()
        return 0
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_gone()
    return code
