#!/usr/bin/env python3
"""Back up every notebook (Observable public/shared/private, PostHog) through routegate's stable API.

    python examples/backup_notebooks.py --gateway URL --out DIR [--api-key KEY]
        [--observable-types public,shared,private] [--posthog-project ID]

This is the job routegate exists for: it only knows the gateway's stable URLs, so when
Observable or PostHog move a route, an edit to routes.yaml (and a reload) fixes it, even
in the middle of a run, because transient answers (5xx) are retried with backoff.

What lands in DIR::

    index.json                          one entry per notebook: updated_at, version, file, saved_at, etag
    observable/<id>.json                the full document  (GET /v1/observable/notebooks/{id})
    posthog/<project>/<short_id>.json   with its content   (GET /v1/posthog/projects/{p}/notebooks/{id})

* Incremental: a notebook whose listed ``updated_at`` (and, for Observable, ``version``)
  equals its index entry, and whose file exists, is not fetched again; one whose listing
  changed is asked for with ``If-None-Match`` and the ETag stored, so an unchanged document
  costs a 304 and no body.
* Resumable: every file is written to a temporary name and renamed into place, and the
  index is rewritten the same way as the run goes, so a run killed at any point leaves a
  consistent directory; the next run fetches only what is missing or changed.
* Careful with the gateway: a 429, or a 503 with ``Retry-After``, is the gateway pacing the run:
  every worker waits as told (one shared pause), without spending the retries, which are for
  failures. A code no retry can heal (the gateway's upstream credentials refused or missing)
  stops the run at once; a route whose mapping broke (``upstream_route_gone``, ``shape_drift``
  ...) is retried long enough for an operator's reload, and stops the run once it has failed
  ``BROKEN_AFTER`` notebooks. ``upstream_forbidden`` (the upstream refused the gateway's
  credential this call: a missing permission or scope) is never retried: a listing refused so
  stops the run, notebooks refused so count towards ``BROKEN_AFTER``.
* Listing first: a source's whole listing is read (a handful of requests) before any
  notebook is downloaded, so the window in which an edit can make the gateway answer 409
  ``collection_changed`` is only as long as the listing itself, not the whole run. A listing
  answered 409 is read again from its first page; only a listing read to its end marks
  notebooks ``gone_since``.
* Exit status: 0 everything listed was backed up; 1 some notebook or listing failed after
  retries, or the run was stopped (everything else is saved; run again); 2 usage error;
  130 interrupted.

Only the standard library and aiohttp are used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import aiohttp

OBSERVABLE_TYPES = ("public", "shared", "private", "trash")
DEFAULT_TYPES = "public,shared,private"
PAGE = 50  # the gateway's default page
CONCURRENCY = 4  # notebooks fetched at once
RETRY_STATUSES = frozenset({500, 502, 503, 504})
MAX_RETRIES = 100
BACKOFF_BASE = 0.5  # seconds; doubles per attempt
BACKOFF_CAP = 30.0
PAUSE_CAP = 60.0  # the longest single pause a Retry-After can impose
PACED_LIMIT = 300.0  # seconds of being told to wait with no request getting through: the run stops
LISTING_RESTARTS = 3  # a listing that changed while being read is read again from its first page
#: the gateway's upstream credentials are refused or missing: every request would fail the same way
FATAL_CODES = frozenset({"upstream_auth_rejected", "upstream_credentials_missing"})
#: the route's mapping no longer fits the upstream: retrying does not heal it, an operator's
#: routes.yaml edit and reload does; retried (to give the reload time), and after BROKEN_AFTER
#: notebooks of one route failed with one of these, the run stops
BROKEN_ROUTE_CODES = frozenset(
    {
        "upstream_route_gone",
        "upstream_rejected",
        "shape_drift",
        "upstream_bad_json",
        "pagination_stalled",
        "pagination_switched",
        "pagination_bad_link",
        "bad_redirect",
        "redirect_loop",
        "redirect_off_host",
        "bad_upstream_header",
    }
)
BROKEN_AFTER = 3
#: 502s that no retry and no reload heals within a run (a size limit): fail that notebook or listing at once
FINAL_CODES = frozenset({"upstream_too_large", "collection_too_large", "pagination_ties"})
#: 409s after which a listing is read again from its first page: the list moved under the walk, or
#: the gateway was upgraded mid-walk and can no longer vouch for the cursor it issued before
RESTART_CODES = {
    "collection_changed": "the listing changed while it was read",
    "cursor_outdated": "the gateway was upgraded while the listing was read",
}
#: the upstream refused the gateway's credential for this call (a 403: a permission or scope it lacks);
#: a permission does not appear by retrying: never retried; a listing refused so stops the run, and
#: notebooks refused so count towards BROKEN_AFTER (a missing scope refuses them all)
FORBIDDEN_CODES = frozenset({"upstream_forbidden"})
INDEX_SAVE_EVERY = 0.25  # seconds between index rewrites while notebooks are being saved
INDEX_FORMAT = 1
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # ids become file names: nothing else is accepted

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def log(message: str) -> None:
    """A line on stderr; on a terminal it first clears the progress bar it would cut through."""
    prefix = "\r\033[K" if sys.stderr.isatty() else ""
    print(prefix + message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- files


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary sibling, fsync, rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # unique per write
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
            self.save()

    def save(self) -> None:
        if not self._dirty:
            return
        self.data["updated_at"] = now()
        write_json_atomic(self.path, self.data)
        self._dirty = False
        self._saved_at = time.monotonic()


# --------------------------------------------------------------------------- the gateway


class ApiError(Exception):
    """A final (non-retried, or retried in vain) answer from the gateway."""

    def __init__(self, status: int, code: str, message: str, route: str | None = None) -> None:
        where = f" (route {route})" if route else ""
        super().__init__(f"{status} {code}{where}: {message}")
        self.status = status
        self.code = code
        self.route = route


class Fatal(Exception):
    """Nothing else can succeed either (refused credentials, a broken route): stop the run."""


Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Pacer:
    """The gateway's "wait" (a 429, or a 503 with ``Retry-After``), shared by every worker.

    When one request is told to wait, the others hold off too instead of racing into the same
    limit, and no retry is spent: a rate limit slows the run down, it never fails a notebook.
    Being told to wait for ``limit`` seconds with no request getting through stops the run.
    """

    def __init__(self, sleep: Sleep, clock: Clock, limit: float = PACED_LIMIT) -> None:
        self.sleep = sleep
        self.clock = clock
        self.limit = limit
        self.until = 0.0
        self.stalled_since: float | None = None
        self.pauses = 0
        self._said_at: float | None = None

    async def ready(self) -> None:
        """Returns once no pause is in force; each waiter adds its own jitter, so they do not resume in lockstep."""
        while (left := self.until - self.clock()) > 0:
            await self.sleep(left * (1 + random.random() * 0.2))

    def hold(self, seconds: float, error: ApiError) -> float:
        """Start (or extend) the shared pause; the seconds to wait from now."""
        seconds = max(seconds, 0.1)  # "Retry-After: 0" again and again must not become a busy loop
        t = self.clock()
        if self.stalled_since is None:
            self.stalled_since = t
        elif t - self.stalled_since >= self.limit:
            raise Fatal(
                f"the gateway has said to wait for {t - self.stalled_since:.0f}s with no request getting "
                f"through (last: {_one_line(str(error))}); stopping"
            )
        if t + seconds > self.until:
            self.until = t + seconds
            self.pauses += 1
            if self._said_at is None or t - self._said_at >= 30:  # a steady rate limit is one line per 30s
                self._said_at = t
                log(
                    f"the gateway says wait {seconds:.1f}s ({error.status} {error.code}): every worker pauses "
                    f"({self.pauses} pause(s) so far; waiting spends no retries)"
                )
        return self.until - t

    def passed(self) -> None:
        """A request got through: whatever pausing there was, the run is moving."""
        self.stalled_since = None


class Gateway:
    """GETs against the stable API: pacing as the gateway says, retrying what may go away by itself."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base: str,
        retries: int,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self.session = session
        self.base = base.rstrip("/")
        self.retries = retries
        self.retried = 0
        self.sleep = sleep
        self.pacer = Pacer(sleep, clock)

    async def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        fetched = await self.fetch(path, params)
        assert fetched is not None
        return fetched[0]

    async def fetch(
        self, path: str, params: dict[str, str] | None = None, etag: str | None = None
    ) -> tuple[Any, str | None] | None:
        """(body, its ETag), or None: the gateway answered 304, the body is still the one ``etag`` names."""
        conditional = {"If-None-Match": etag} if etag else None
        attempt = 0
        while True:
            await self.pacer.ready()
            retry_after: float | None = None
            try:
                async with self.session.get(self.base + path, params=params, headers=conditional) as resp:
                    if resp.status == 304 and etag:
                        self.pacer.passed()
                        return None
                    if resp.status == 200:
                        body = await resp.json(content_type=None)
                        self.pacer.passed()
                        return body, resp.headers.get("ETag")
                    error = await _error_of(resp)
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
            except aiohttp.ClientConnectorError as exc:  # nothing listens: the gateway itself is down
                error = ApiError(0, "unreachable", str(exc))
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                error = ApiError(0, "connection", str(exc) or type(exc).__name__)
            except ValueError as exc:  # a 200 whose body is not JSON: truncated, or not the gateway
                error = ApiError(0, "bad_json", str(exc))
            if error.status in (401, 403):
                raise Fatal(f"the gateway refused the request ({_one_line(str(error))}); check --api-key") from None
            if error.code in FATAL_CODES:
                raise Fatal(
                    f"{error.code} on route {error.route or path}: {_one_line(str(error))}; no request can "
                    "succeed until the gateway's upstream credentials are renewed; stopping"
                ) from None
            if error.status == 429 or (error.status == 503 and retry_after is not None):
                self.pacer.hold(retry_after if retry_after is not None else 1.0, error)
                continue  # pacing, not failing: no retry is spent
            if (
                (error.status not in RETRY_STATUSES and error.status != 0)
                or error.code in FINAL_CODES
                or error.code in FORBIDDEN_CODES
            ):
                raise error
            if attempt >= self.retries:
                if error.code == "unreachable":
                    raise Fatal(f"the gateway at {self.base} is unreachable: {_one_line(str(error))}") from None
                raise error
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 10))
            delay *= 1 + random.random() * 0.2  # jitter: parallel workers do not retry in lockstep
            attempt += 1
            self.retried += 1
            log(f"retry {attempt}/{self.retries} of GET {path} in {delay:.1f}s: {_one_line(str(error))}")
            await self.sleep(delay)

    async def pages(self, path: str, params: dict[str, str]) -> AsyncIterator[list[dict[str, Any]]]:
        """Each page of a stable collection, following ``next_cursor``."""
        query = {**params, "limit": str(PAGE)}
        while True:
            body = await self.get(path, query)
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list) or not all(isinstance(it, dict) for it in items):
                # not the gateway's collection: nothing in it can be trusted (nor said to be gone)
                raise ApiError(200, "bad_listing", f"{path} did not answer {{items: [objects], next_cursor}}")
            yield items
            cursor = body.get("next_cursor")
            if not cursor:
                return
            query = {**params, "limit": str(PAGE), "cursor": str(cursor)}


async def _error_of(resp: aiohttp.ClientResponse) -> ApiError:
    try:
        body = await resp.json(content_type=None)
        err = body["error"]
        route = err.get("route")
        return ApiError(
            resp.status, str(err.get("code")), str(err.get("message")), route if isinstance(route, str) else None
        )
    except (ValueError, KeyError, TypeError, AttributeError, aiohttp.ContentTypeError):
        return ApiError(resp.status, "http_error", resp.reason or "")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(PAUSE_CAP, max(0.0, seconds)) if seconds == seconds else None  # NaN is no answer


# --------------------------------------------------------------------------- progress


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


# --------------------------------------------------------------------------- sources


@dataclass
class Source:
    """One collection to back up and how its notebooks map to files and index entries."""

    kind: str  # observable | posthog
    label: str
    list_path: str
    list_params: dict[str, str]
    detail_path: Callable[[str], str]
    key: Callable[[str], str]
    file: Callable[[str], str]
    #: the listed fields that change when the notebook does
    fingerprint: tuple[str, ...]
    #: only index entries this returns True for (e.g. the requested types) can be marked gone
    owns: Callable[[dict[str, Any]], bool]
    extra: dict[str, str] = field(default_factory=dict)


def observable_source(types: list[str]) -> Source:
    return Source(
        kind="observable",
        label="observable " + ",".join(types),
        list_path="/v1/observable/notebooks",
        list_params={"type": ",".join(types)},
        detail_path=lambda i: f"/v1/observable/notebooks/{i}",
        key=lambda i: f"observable/{i}",
        file=lambda i: f"observable/{i}.json",
        fingerprint=("updated_at", "version"),
        owns=lambda e: e.get("source") == "observable" and e.get("type") in types,
    )


def posthog_source(project: str) -> Source:
    return Source(
        kind="posthog",
        label=f"posthog project {project}",
        list_path=f"/v1/posthog/projects/{project}/notebooks",
        list_params={},
        detail_path=lambda i: f"/v1/posthog/projects/{project}/notebooks/{i}",
        key=lambda i: f"posthog/{project}/{i}",
        file=lambda i: f"posthog/{project}/{i}.json",
        fingerprint=("updated_at",),
        owns=lambda e: e.get("source") == "posthog" and e.get("project") == project,
        extra={"project": project},
    )


@dataclass
class Outcome:
    failed: list[str] = field(default_factory=list)
    listing_failed: str | None = None
    #: the listing was read from its first page to its last without a failure or a restart in between:
    #: only then may an index entry missing from it be marked gone
    listing_complete: bool = False


class Backup:
    """Lists a source to its end, then hands its notebooks to a small pool of workers that fetch and save them."""

    def __init__(self, gateway: Gateway, out: Path, index: Index, concurrency: int) -> None:
        self.gateway = gateway
        self.out = out
        self.index = index
        self.concurrency = concurrency
        #: (code, route) -> notebooks failed that way: a route broken for all of them stops the run
        self.broken: dict[tuple[str, str], int] = {}

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
        if not _SAFE_ID.match(nb_id):
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
                progress.gone += 1
                return
            self._failed(key, str(exc), outcome, progress)
            self._count_broken(exc, src.detail_path(nb_id))
            return
        if fetched is None:  # 304: the saved file is the current document; only the index learns the listing
            assert kept is not None
            self.index.record(key, {**kept, "updated_at": item.get("updated_at"), **_version_of(item, kept)})
            progress.unchanged += 1
            return
        doc, new_etag = fetched
        rel = src.file(nb_id)
        try:
            write_json_atomic(self.out / rel, doc)
        except OSError as exc:
            self._failed(key, f"cannot write {rel}: {exc}", outcome, progress)
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
                f"(last: {_one_line(str(exc))}); it lacks a permission or scope the route needs (grant it; "
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
        if outcome.listing_complete:
            self._mark_gone(src, seen)
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
                        f"{exc.code} on route {exc.route or src.list_path}: {_one_line(str(exc))}; the gateway's "
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

    def _mark_gone(self, src: Source, seen: set[str]) -> None:
        """A complete listing no longer shows these: keep their files, say so in the index."""
        for key, entry in list(self.index.notebooks.items()):
            if not src.owns(entry):
                continue
            if key in seen:
                if entry.pop("gone_since", None) is not None:
                    self.index.record(key, entry)
            elif "gone_since" not in entry:
                self.index.record(key, {**entry, "gone_since": now()})


def _version_of(item: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    """The listed version, where the listing has one (Observable), else the one kept."""
    return {"version": item["version"]} if "version" in item else {"version": kept.get("version")}


# --------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line (no usage block, no traceback) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)} (see --help)\n")


def _gateway_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the gateway's base URL, or None: the client would fail on it mid-run."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number in 0..65535
    except ValueError as exc:
        return f"--gateway {url!r} is not a URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"--gateway must be an http:// or https:// URL such as http://127.0.0.1:8080, got {url!r}"
    if parts.query or parts.fragment or parts.username or parts.password:
        return f"--gateway takes the base URL only (no query, fragment or user:password), got {url!r}"
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(
        prog="backup_notebooks.py",
        description="Back up every Observable and PostHog notebook through routegate's stable API: "
        "one JSON file per notebook plus index.json; incremental and resumable.",
        epilog="Exit status: 0 all backed up, 1 some notebook or listing failed or the run was stopped (run again), "
        "2 usage error, 130 interrupted (run again to resume).",
    )
    parser.add_argument("--gateway", required=True, help="the gateway's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--out", required=True, type=Path, help="the backup directory (created if missing)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("ROUTEGATE_API_KEY"),
        help="a client key for the gateway (default: $ROUTEGATE_API_KEY; none for an open gateway)",
    )
    parser.add_argument(
        "--observable-types",
        default=DEFAULT_TYPES,
        help=f"comma-separated, of {', '.join(OBSERVABLE_TYPES)} (default {DEFAULT_TYPES}; '' skips Observable)",
    )
    parser.add_argument(
        "--posthog-project",
        default=os.environ.get("POSTHOG_PROJECT_ID"),
        help="the PostHog project id (default: $POSTHOG_PROJECT_ID; unset skips PostHog)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=6,
        help=f"retries of a 5xx or lost connection, backing off (default 6, at most {MAX_RETRIES}); "
        "a 429 or a 503 with Retry-After waits as told without spending them",
    )
    args = parser.parse_args(argv)
    if problem := _gateway_url_problem(args.gateway):
        parser.error(problem)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {str(args.out)!r} exists and is not a directory")
    if args.api_key and not re.fullmatch(r"[!-~]+", args.api_key):
        parser.error("--api-key must be printable ASCII without spaces (it is sent in a header); not shown here")
    args.api_key = args.api_key or None
    types = [t.strip() for t in args.observable_types.split(",") if t.strip()]
    bad = [t for t in types if t not in OBSERVABLE_TYPES]
    if bad:
        parser.error(f"--observable-types: unknown {', '.join(bad)} (known: {', '.join(OBSERVABLE_TYPES)})")
    args.types = list(dict.fromkeys(types))
    if args.posthog_project is not None and not re.fullmatch(r"[0-9]{1,18}", str(args.posthog_project)):
        parser.error(f"--posthog-project must be a numeric project id, got {args.posthog_project!r}")
    if not 0 <= args.retries <= MAX_RETRIES:
        parser.error(f"--retries must be 0 to {MAX_RETRIES}, got {args.retries}")
    if not args.types and args.posthog_project is None:
        parser.error("nothing to back up: give --observable-types and/or --posthog-project")
    return args


async def run(args: argparse.Namespace, sleep: Sleep = asyncio.sleep, clock: Clock = time.monotonic) -> int:
    """The backup; ``sleep`` and ``clock`` are what every wait uses (tests pass a fake pair)."""
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(out)
    except (OSError, ValueError) as exc:
        log(f"error: --out {str(out)!r} cannot be used as the backup directory: {_one_line(str(exc))}")
        return EXIT_USAGE
    index = Index(out)
    try:
        index.load()
    except (OSError, ValueError) as exc:
        log(f"error: --out {str(out)!r} holds an index.json this script cannot use: {_one_line(str(exc))}")
        return EXIT_USAGE
    sources: list[Source] = []
    if args.types:
        sources.append(observable_source(args.types))
    if args.posthog_project is not None:
        sources.append(posthog_source(str(args.posthog_project)))
    else:
        log("PostHog: skipped (no --posthog-project and no POSTHOG_PROJECT_ID)")
    # a backup wants what the upstream holds now, not a copy the gateway cached a minute ago
    headers = {"Accept": "application/json", "User-Agent": "routegate-backup-notebooks/1", "Cache-Control": "no-cache"}
    if args.api_key:
        headers["Authorization"] = f"Bearer {args.api_key}"
    timeout = aiohttp.ClientTimeout(total=120, connect=10)
    try:
        index.set("gateway", args.gateway)
        index.set("run_started_at", now())
        index.save()
    except OSError as exc:
        log(f"error: --out {str(out)!r} is not writable: {_one_line(str(exc))}")
        return EXIT_USAGE
    failed: list[str] = []
    listing_failures: list[str] = []
    complete = False
    try:
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            gateway = Gateway(session, args.gateway, args.retries, sleep=sleep, clock=clock)
            backup = Backup(gateway, out, index, CONCURRENCY)
            for src in sources:
                outcome = await backup.run_source(src)
                failed += outcome.failed
                if outcome.listing_failed:
                    listing_failures.append(f"{src.label}: {outcome.listing_failed}")
        complete = not failed and not listing_failures
    except Fatal as exc:
        log(f"error: {exc}")
        return EXIT_PARTIAL
    finally:  # also on interruption: whatever was saved is recorded
        index.set("run_finished_at", now())
        index.set("complete", complete)
        index.save()
    if complete:
        print(f"backup complete: {len(index.notebooks)} notebooks in {out}")
        return EXIT_OK
    print(f"backup INCOMPLETE: {len(failed)} notebook(s) failed, {len(listing_failures)} listing(s) failed")
    for line in listing_failures:
        print(f"  {line}")
    for key in failed[:20]:
        print(f"  {key}: {index.failures.get(key, {}).get('error')}")
    if len(failed) > 20:
        print(f"  ... and {len(failed) - 20} more (see 'failures' in {index.path})")
    print("Everything else is saved; run the same command again to retry what failed.")
    return EXIT_PARTIAL


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loop = asyncio.new_event_loop()
    task = loop.create_task(run(args))
    interrupted = False

    def stop() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if not interrupted:
            raise
        log("interrupted: what was saved is in the index; run the same command again to resume")
        return EXIT_INTERRUPTED
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
