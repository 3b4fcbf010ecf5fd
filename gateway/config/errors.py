"""Why a routes file cannot be served: each problem with its file, line and key path."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"


class ConfigError(Exception):
    """A routes file that cannot be served; ``problems`` lists every mistake found, in the file's order.

    Problems are found section by section (and pydantic reports a section's type errors before its
    unknown keys), but the operator reads the file top down: sorted by line (stably), as compilers do.
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(sorted(problems, key=lambda p: (p.file, p.line)))
        super().__init__("\n".join(str(p) for p in problems))
