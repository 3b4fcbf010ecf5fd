"""Shared by several test modules (moved from tests/test_workers.py): no test module imports another."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp


async def _fresh_get(url: str, **kw: Any) -> tuple[int, Any]:
    """One request on its own new connection, so SO_REUSEPORT may pick either worker."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s,
        s.get(url, **kw) as r,
    ):
        return r.status, await r.json(content_type=None)


def _children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry))
    return out


async def _pids(base: str, n: int) -> Counter[int]:
    seen: Counter[int] = Counter()
    for _ in range(n):
        try:
            status, body = await _fresh_get(base + "/readyz")
        except aiohttp.ClientError:
            continue
        if status == 200:
            seen[body["pid"]] += 1
    return seen
