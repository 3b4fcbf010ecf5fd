"""Stored responses and the in-process backend.

Expiry is kept by the entries themselves (``fresh_until``/``stale_until``) rather than
by a cachetools ``TTLCache``, which would drop an entry the moment it goes stale and
leave nothing to serve when the upstream then fails.  The bound is on bytes: a
cachetools ``LRUCache`` that counts each entry's size, so a few huge
aggregated responses cannot hold more memory than ``cache.max_bytes``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import NamedTuple, Protocol

from cachetools import LRUCache
from multidict import CIMultiDict

from gateway.cache.policy import CacheKey, under

#: bookkeeping charged per entry on top of its key, headers and body
ENTRY_OVERHEAD = 256


class CacheUnavailable(Exception):
    """The backend cannot answer now; the request goes to the upstream as if nothing were cached."""


@dataclass(frozen=True, slots=True)
class Entry:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: wall-clock times (shared by replicas through Redis)
    stored_at: float
    fresh_until: float
    stale_until: float
    #: the write sequence when the fill started; newer markers on the path make the entry invalid
    seq: int
    #: the answer's headers as a hit sends them, made once per entry (gateway.cache.core); not compared
    head: list[CIMultiDict[str]] = field(default_factory=list, compare=False, repr=False)

    def size(self, key: CacheKey) -> int:
        """What the entry holds against ``cache.max_bytes``: its headers twice (as stored, and as ``head``)."""
        return len(self.body) + 2 * sum(len(k) + len(v) for k, v in self.headers) + len(key.text) + ENTRY_OVERHEAD

    def encode(self) -> bytes:
        meta = {
            "s": self.status,
            "h": self.headers,
            "t": self.stored_at,
            "f": self.fresh_until,
            "x": self.stale_until,
            "q": self.seq,
        }
        return json.dumps(meta, separators=(",", ":")).encode() + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> Entry | None:
        """None for anything unreadable (another version's format): a miss, never an error."""
        head, sep, body = data.partition(b"\n")
        if not sep:
            return None
        try:
            m = json.loads(head)
            return cls(
                int(m["s"]),
                tuple((str(k), str(v)) for k, v in m["h"]),
                body,
                float(m["t"]),
                float(m["f"]),
                float(m["x"]),
                int(m["q"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


class Found(NamedTuple):
    """What a lookup found (a tuple: made on every cache hit, and a frozen dataclass's ``__init__`` is slow)."""

    entry: Entry | None
    #: the newest marker on the entry's path (0 when none)
    newest_marker: int
    #: the write sequence now: a fill started after this lookup stores it
    seq: int

    @property
    def valid_entry(self) -> Entry | None:
        """The entry, unless a write or purge on its path happened after its fill started."""
        if self.entry is None or self.entry.seq < self.newest_marker:
            return None
        return self.entry


class Backend(Protocol):
    name: str

    async def lookup(self, key: CacheKey, markers: Sequence[str]) -> Found: ...

    async def store(self, key: CacheKey, entry: Entry, lifetime: float) -> None: ...

    async def discard(self, key: CacheKey) -> None: ...

    async def invalidate(self, markers: Sequence[str], keep_for: float) -> None: ...

    async def purge(self, route: str | None, prefix: str | None) -> int: ...

    def usage(self) -> tuple[int, int] | None:
        """(entries, bytes) when the backend can tell cheaply."""
        ...

    async def close(self) -> None: ...


class MemoryBackend:
    """One process's cache: entries in a byte-bounded LRU, markers in a count-bounded dict."""

    name = "memory"

    def __init__(self, max_bytes: int, max_markers: int = 50_000) -> None:
        self._entries: LRUCache[str, tuple[CacheKey, Entry, int]] = LRUCache(
            maxsize=max_bytes, getsizeof=lambda item: item[2]
        )
        self._markers: dict[str, int] = {}
        self._max_markers = max_markers
        #: markers forgotten to stay bounded read as this (never older than what they held)
        self._floor = 0
        self._seq = 0

    async def lookup(self, key: CacheKey, markers: Sequence[str]) -> Found:
        return self.lookup_now(key, markers)

    def lookup_now(self, key: CacheKey, markers: Sequence[str]) -> Found:
        """``lookup`` without a coroutine: nothing here waits, and a cache hit is mostly this."""
        item = self._entries.get(key.text)
        floor, marks = self._floor, self._markers
        newest = max(map(marks.get, markers, repeat(floor)))  # each marker's seq, or the floor when unknown
        return Found(item[1] if item is not None else None, newest, self._seq)

    async def store(self, key: CacheKey, entry: Entry, lifetime: float) -> None:
        size = entry.size(key)
        if size > self._entries.maxsize:
            return
        self._entries[key.text] = (key, entry, size)

    async def discard(self, key: CacheKey) -> None:
        self._entries.pop(key.text, None)

    async def invalidate(self, markers: Sequence[str], keep_for: float) -> None:
        self._seq += 1
        for m in markers:
            self._markers.pop(m, None)  # re-insert at the end: the dict stays ordered oldest-first
            self._markers[m] = self._seq
        if len(self._markers) > self._max_markers:
            for m in list(self._markers)[: self._max_markers // 2]:
                self._floor = max(self._floor, self._markers.pop(m))

    async def purge(self, route: str | None, prefix: str | None) -> int:
        doomed = [
            text
            for text, (key, _, _) in list(self._entries.items())
            if (route is None or key.route == route) and (prefix is None or under(key.path, prefix))
        ]
        for text in doomed:
            self._entries.pop(text, None)
        return len(doomed)

    def usage(self) -> tuple[int, int] | None:
        return len(self._entries), int(self._entries.currsize)

    async def close(self) -> None:
        self._entries.clear()
