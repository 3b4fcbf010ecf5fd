"""The backup directory: atomic writes, stale temporary files, and ``index.json``."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .settings import INDEX_SAVE_EVERY

INDEX_FORMAT = 1


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def json_bytes(data: Any) -> bytes:
    """``data`` as UTF-8 JSON; escaped (``ensure_ascii``) when it holds a lone surrogate.

    ``"\\ud83d"`` alone is legal JSON (RFC 8259 8.2) and decodes to a str that UTF-8 cannot encode;
    escaped, the file is still valid JSON and reads back to the same value.
    """
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(data, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary sibling, fsync, rename: readers see the old file or the new one.

    The document is encoded before any file is opened, and a write that fails removes its
    temporary file: a failure leaves the directory as it was.
    """
    payload = json_bytes(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # unique per write
    try:
        with tmp.open("wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove_stale_tmp(out: Path) -> None:
    """Temporary files left by a killed run are never valid data."""
    for tmp in out.rglob(".*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


class Index:
    """``index.json``: what is backed up, and what failed last time; rewritten atomically."""

    def __init__(self, out: Path) -> None:
        self.path = out / "index.json"
        self.data: dict[str, Any] = {"format": INDEX_FORMAT, "notebooks": {}, "failures": {}}
        self._dirty = False
        self._saved_at = 0.0

    def load(self) -> None:
        if not self.path.exists():
            return
        data = json.loads(self.path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
            raise ValueError(f"{self.path} is not an index this script wrote (format {INDEX_FORMAT})")
        data.setdefault("notebooks", {})
        data.setdefault("failures", {})
        self.data = data

    @property
    def notebooks(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = self.data["notebooks"]
        return result

    @property
    def failures(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = self.data["failures"]
        return result

    def record(self, key: str, entry: dict[str, Any]) -> None:
        self.notebooks[key] = entry
        self.failures.pop(key, None)
        self._touch()

    def fail(self, key: str, message: str) -> None:
        self.failures[key] = {"error": message, "at": now()}
        self._touch()

    def set(self, name: str, value: Any) -> None:
        self.data[name] = value
        self._touch()

    def _touch(self) -> None:
        self._dirty = True
        if time.monotonic() - self._saved_at >= INDEX_SAVE_EVERY:
            try:
                self.save()
            except OSError:  # a full disk, say: the index stays dirty and a later save tries again
                self._saved_at = time.monotonic()

    def save(self) -> None:
        if not self._dirty:
            return
        self.data["updated_at"] = now()
        write_json_atomic(self.path, self.data)
        self._dirty = False
        self._saved_at = time.monotonic()
