"""docs/cli.md, written from the parser itself so the page cannot drift from ``--help``.

``python -m gateway.clidoc > docs/cli.md`` regenerates it; tests/test_docs.py fails while it is stale.
"""

from __future__ import annotations

import argparse
import os

from gateway.cli import build_parser

INTRO = """# Command line

`routegate` is the command (`gateway` is kept as an alias, and `python -m gateway` is the same).
This page is generated from the commands' own `--help` by `python -m gateway.clidoc`.
"""


def _help(parser: argparse.ArgumentParser) -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix it so the page is the same everywhere
    return parser.format_help().rstrip()


def render() -> str:
    parser = build_parser()
    parts = [INTRO, "```text", _help(parser), "```"]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, child in sub.choices.items():
        parts += ["", f"## routegate {name}", "", "```text", _help(child), "```"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(), end="")
