"""The backup of one source: its whole listing first, then its notebooks by a small pool of workers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import ApiError, Fatal, Gateway
from .codes import BROKEN_ROUTE_CODES, FORBIDDEN_CODES, RESTART_CODES
from .console import log, one_line
from .gone import GoneCheck
from .progress import Progress
from .settings import BACKOFF_BASE, BROKEN_AFTER, LISTING_RESTARTS
from .sources import SAFE_ID, Source
from .store import Index, now, write_json_atomic


@dataclass
class Outcome:
    failed: list[str] = field(default_factory=list)
    listing_failed: str | None = None
    #: the listing was read from its first page to its last without a failure or a restart in between:
    #: only then may an index entry missing from it be marked gone
    listing_complete: bool = False
    #: missing from the complete listing, yet its own GET answered 200 or 304: kept, not marked gone
    kept_unlisted: list[str] = field(default_factory=list)
    #: "key: answer": missing from the complete listing, its own GET neither 404 nor 200: left unmarked
    unchecked: list[str] = field(default_factory=list)


class Backup:
    """Lists a source to its end, then hands its notebooks to a small pool of workers that fetch and save them."""

    def __init__(self, gateway: Gateway, out: Path, index: Index, concurrency: int) -> None:
        self.gateway = gateway
        self.out = out
        self.index = index
        self.concurrency = concurrency
        #: (code, route) -> notebooks failed that way: a route broken for all of them stops the run
        self.broken: dict[tuple[str, str], int] = {}
        #: key -> its own GET this run answered 404 not_found (True) or a document (False): what a gone check needs
        self.answered: dict[str, bool] = {}

    def unchanged(self, src: Source, item: dict[str, Any]) -> bool:
        entry = self.index.notebooks.get(src.key(str(item["id"])))
        if entry is None or not (self.out / entry["file"]).is_file():
            return False
        return all(entry.get(f) == item.get(f) for f in src.fingerprint)

    def _failed(self, key: str, message: str, outcome: Outcome, progress: Progress) -> None:
        self.index.fail(key, message)
        outcome.failed.append(key)
        progress.failed += 1
        log(f"{key}: FAILED: {message}")

    async def save_one(self, src: Source, item: dict[str, Any], outcome: Outcome, progress: Progress) -> None:
        nb_id = str(item.get("id"))
        key = src.key(nb_id)
        if not SAFE_ID.match(nb_id):
            self._failed(key, f"refusing an id that is not a safe file name: {nb_id!r}", outcome, progress)
            return
        if self.unchanged(src, item):
            progress.unchanged += 1
            return
        kept = self.index.notebooks.get(key)
        # the listing says it changed, but the document may not have: the stored ETag lets the gateway say 304
        etag = kept.get("etag") if kept is not None and (self.out / kept["file"]).is_file() else None
        try:
            fetched = await self.gateway.fetch(src.detail_path(nb_id), etag=etag)
        except ApiError as exc:
            if exc.status == 404:  # deleted between listing and fetching: nothing to back up
                log(f"{key}: deleted since it was listed")
                if exc.code == "not_found":
                    self.answered[key] = True
                progress.gone += 1
                return
            self._failed(key, str(exc), outcome, progress)
            self._count_broken(exc, src.detail_path(nb_id))
            return
        self.answered[key] = False
        if fetched is None:  # 304: the saved file is the current document; only the index learns the listing
            assert kept is not None
            self.index.record(key, {**kept, "updated_at": item.get("updated_at"), **_version_of(item, kept)})
            progress.unchanged += 1
            return
        doc, new_etag = fetched
        rel = src.file(nb_id)
        try:
            write_json_atomic(self.out / rel, doc)
        except (OSError, ValueError, TypeError) as exc:  # this notebook alone fails; no .tmp stays behind
            self._failed(key, f"cannot write {rel}: {one_line(str(exc))}", outcome, progress)
            return
        entry: dict[str, Any] = {
            "source": src.kind,
            **src.extra,
            "id": nb_id,
            "title": item.get("title"),
            "updated_at": item.get("updated_at"),
            "version": item.get("version", doc.get("version") if isinstance(doc, dict) else None),
            "file": rel,
            "saved_at": now(),
        }
        if new_etag:
            entry["etag"] = new_etag
        if "type" in item:
            entry["type"] = item["type"]
        self.index.record(key, entry)
        progress.fetched += 1

    def _count_broken(self, exc: ApiError, path: str) -> None:
        """A mapping breakage or refusal that failed BROKEN_AFTER notebooks of one route is the route's, not theirs."""
        if exc.code not in BROKEN_ROUTE_CODES and exc.code not in FORBIDDEN_CODES:
            return
        where = (exc.code, exc.route or path)
        self.broken[where] = n = self.broken.get(where, 0) + 1
        if n < BROKEN_AFTER:
            return
        if exc.code in FORBIDDEN_CODES:
            raise Fatal(
                f"{exc.code} on route {where[1]}: the upstream refused {n} notebooks to the gateway's credential "
                f"(last: {one_line(str(exc))}); it lacks a permission or scope the route needs (grant it; "
                "retrying does not help); stopping"
            )
        raise Fatal(
            f"{exc.code} on route {where[1]}: {n} notebooks failed the same way after their retries; the route "
            "is broken, not the notebooks (an operator fixes routes.yaml and reloads); stopping"
        )

    async def run_source(self, src: Source) -> Outcome:
        outcome = Outcome()
        progress = Progress(src.label)
        # the whole listing first: downloads during it would stretch the window an edit can hit (409)
        listed: dict[str, dict[str, Any]] = {}
        seen = await self._list(src, listed, outcome, progress)
        progress.listing = False
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        for item in listed.values():
            queue.put_nowait(item)
        for _ in range(self.concurrency):
            queue.put_nowait(None)

        async def worker() -> None:
            while (item := await queue.get()) is not None:
                await self.save_one(src, item, outcome, progress)
                progress.show()

        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(self.concurrency):
                    tg.create_task(worker())
        except ExceptionGroup as group:
            fatal = next((e for e in group.exceptions if isinstance(e, Fatal)), None)
            if fatal is not None:
                raise fatal from None
            raise
        if outcome.listing_complete:  # missing from it is not gone yet: each is asked for by its own GET
            missing = await GoneCheck(self.gateway, self.out, self.index, self.concurrency).settle(
                src, seen, self.answered
            )
            outcome.kept_unlisted += missing.kept
            outcome.unchecked += missing.unchecked
            for key, message in missing.failed.items():
                self._failed(key, message, outcome, progress)
        progress.show(final=True)
        return outcome

    async def _list(
        self, src: Source, listed: dict[str, dict[str, Any]], outcome: Outcome, progress: Progress
    ) -> set[str]:
        """Read the listing to its end into ``listed`` (key -> latest item), again from the first page on a 409.

        Returns the keys of the walk that reached the last page (only it says what exists), or an
        empty set when the listing failed; ``listed`` keeps what every walk listed, so a failed
        listing still backs up what it got to.
        """
        restarts = 0
        while True:
            seen: set[str] = set()
            try:
                async for page in self.gateway.pages(src.list_path, src.list_params):
                    for item in page:
                        key = src.key(str(item.get("id")))
                        seen.add(key)
                        if key not in listed:
                            progress.listed += 1
                        listed[key] = item  # listed again (a restart, a shifted page): fetched once, as last listed
                    progress.show()
                outcome.listing_complete = True
                return seen
            except ApiError as exc:
                if exc.code in FORBIDDEN_CODES:
                    raise Fatal(
                        f"{exc.code} on route {exc.route or src.list_path}: {one_line(str(exc))}; the gateway's "
                        "credential lacks a permission or scope the listing needs (grant it; retrying does not "
                        "help); stopping"
                    ) from None
                if exc.code in RESTART_CODES and restarts < LISTING_RESTARTS:
                    restarts += 1
                    log(
                        f"{src.label}: {RESTART_CODES[exc.code]} (409 {exc.code}); "
                        f"reading it again from the first page ({restarts}/{LISTING_RESTARTS})"
                    )
                    await self.gateway.sleep(BACKOFF_BASE * restarts)
                    continue
                more = f" (it kept changing: read {restarts + 1} times)" if restarts else ""
                outcome.listing_failed = f"listing {src.list_path} failed: {exc}{more}"
                log(f"{src.label}: {outcome.listing_failed}")
                return set()


def _version_of(item: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    """The listed version, where the listing has one (Observable), else the one kept."""
    return {"version": item["version"]} if "version" in item else {"version": kept.get("version")}
