"""Which notebooks a complete listing no longer shows are really gone: each is asked for by its own GET.

A listing can look complete and still lack a live notebook (an upstream or a gateway that drops an
item from a page): marking it gone on the listing's word alone would be wrong. So only the
candidates, the index entries missing from a complete listing and not yet marked, are asked for:
404 ``not_found`` marks one ``gone_since``; 200 or 304 keeps it (and saves its document if it
changed); any other answer leaves it as it was this run, and the run's summary says so.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import ApiError, Fatal, Gateway
from .console import log, one_line
from .sources import SAFE_ID, Source
from .store import Index, now, write_json_atomic


@dataclass
class Missing:
    """What asking for the notebooks a complete listing lacked found out."""

    gone: int = 0
    #: still served (200, 304): the listing lacked a live notebook; kept, not marked gone
    kept: list[str] = field(default_factory=list)
    #: "key: answer": neither 404 nor 200; left as it was this run, asked again next run
    unchecked: list[str] = field(default_factory=list)
    #: key -> why its still-served document could not be saved
    failed: dict[str, str] = field(default_factory=dict)


def candidates(src: Source, index: Index, seen: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """The source's index entries a complete listing lacks and that are not marked gone yet.

    An entry the listing shows again loses its ``gone_since`` here.
    """
    found = []
    for key, entry in list(index.notebooks.items()):
        if not src.owns(entry):
            continue
        if key in seen:
            if entry.pop("gone_since", None) is not None:
                index.record(key, entry)
        elif "gone_since" not in entry:
            found.append((key, entry))
    return found


class GoneCheck:
    """Asks the gateway for each candidate, a few at a time, and records what the answers prove."""

    def __init__(self, gateway: Gateway, out: Path, index: Index, concurrency: int) -> None:
        self.gateway = gateway
        self.out = out
        self.index = index
        self.concurrency = concurrency

    async def settle(self, src: Source, seen: set[str], answered: dict[str, bool]) -> Missing:
        """Settles the candidates; ``answered`` (key -> 404 or not) are those asked already this run."""
        missing = Missing()
        todo = []
        for key, entry in candidates(src, self.index, seen):
            if key not in answered:
                todo.append((key, entry))
            elif answered[key]:
                self.index.record(key, {**entry, "gone_since": now()})
                missing.gone += 1
            else:  # listed by a walk that was read again, and fetched this run: live
                log(f"{key}: not in the complete listing, but fetched this run: kept, not gone")
                missing.kept.append(key)
        limit = asyncio.Semaphore(self.concurrency)

        async def one(key: str, entry: dict[str, Any]) -> None:
            async with limit:
                await self._check(src, key, entry, missing)

        try:
            async with asyncio.TaskGroup() as tg:
                for key, entry in todo:
                    tg.create_task(one(key, entry))
        except ExceptionGroup as group:
            fatal = next((e for e in group.exceptions if isinstance(e, Fatal)), None)
            if fatal is not None:
                raise fatal from None
            raise
        if missing.gone:
            log(f"{src.label}: {missing.gone} notebook(s) no longer listed and answered 404: marked gone_since")
        return missing

    async def _check(self, src: Source, key: str, entry: dict[str, Any], missing: Missing) -> None:
        nb_id = str(entry.get("id"))
        if not SAFE_ID.match(nb_id):
            missing.unchecked.append(f"{key}: its index entry has no usable id ({nb_id!r})")
            return
        rel = src.file(nb_id)
        has_file = (self.out / rel).is_file()
        etag = entry.get("etag") if has_file else None
        try:
            fetched = await self.gateway.fetch(src.detail_path(nb_id), etag=etag)
        except ApiError as exc:
            if exc.status == 404 and exc.code == "not_found":
                self.index.record(key, {**entry, "gone_since": now()})
                missing.gone += 1
                return
            # a 404 no_route is the gateway's route table, not the notebook; a 5xx says nothing either
            missing.unchecked.append(f"{key}: {one_line(str(exc))}")
            log(f"{key}: not in the complete listing, and its own GET answered {one_line(str(exc))}: left unmarked")
            return
        if fetched is not None:
            doc, new_etag = fetched
            if src.left(doc):
                self.index.record(key, {**entry, "gone_since": now()})
                missing.gone += 1
                return
            if not has_file or _stored(self.out / rel) != doc:
                try:
                    write_json_atomic(self.out / rel, doc)
                except (OSError, ValueError, TypeError) as exc:
                    missing.failed[key] = f"cannot write {rel}: {one_line(str(exc))}"
                    return
                self.index.record(key, _refreshed(entry, doc, rel, new_etag))
            elif new_etag and new_etag != entry.get("etag"):  # the same document: its ETag makes the next ask a 304
                self.index.record(key, {**entry, "etag": new_etag})
        log(f"{key}: not in the complete listing, but its own GET answers {200 if fetched else 304}: kept, not gone")
        missing.kept.append(key)


def _stored(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _refreshed(entry: dict[str, Any], doc: Any, rel: str, etag: str | None) -> dict[str, Any]:
    """The entry of a document saved from its own GET (no listing item): what the document says."""
    fresh = {**entry, "file": rel, "saved_at": now()}
    if isinstance(doc, dict):
        fresh.update({f: doc[f] for f in ("title", "updated_at", "version") if f in doc})
    fresh.pop("etag", None)
    if etag:
        fresh["etag"] = etag
    return fresh
