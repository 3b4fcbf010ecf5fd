"""The command line: the options and their checks, the run, and its exit status."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import time
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import aiohttp

from .client import Clock, Fatal, Gateway, Sleep
from .console import log, one_line
from .job import Backup
from .lock import LOCK_NAME, Busy, DirLock
from .settings import CONCURRENCY, MAX_RETRIES
from .sources import Source, observable_source, posthog_source
from .store import Index, now, remove_stale_tmp

OBSERVABLE_TYPES = ("public", "shared", "private", "trash")
DEFAULT_TYPES = "public,shared,private"

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line (no usage block, no traceback) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see --help)\n")


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
    except (OSError, ValueError) as exc:
        log(f"error: --out {str(out)!r} cannot be used as the backup directory: {one_line(str(exc))}")
        return EXIT_USAGE
    lock = DirLock(out)
    try:
        lock.acquire()
    except Busy:
        log(
            f"error: --out {str(out)!r} is in use: another backup is writing into it (it holds "
            f"{str(out / LOCK_NAME)!r}); run this one once that one has finished"
        )
        return EXIT_USAGE
    except OSError as exc:  # a file system without flock: the run goes on, unguarded
        log(f"warning: --out {str(out)!r} cannot be locked ({one_line(str(exc))}); run one backup at a time into it")
    try:
        return await _run_locked(args, sleep, clock)
    finally:
        lock.release()


async def _run_locked(args: argparse.Namespace, sleep: Sleep, clock: Clock) -> int:
    """The backup, with ``--out`` to itself: a temporary file there now is a dead run's."""
    out: Path = args.out
    try:
        remove_stale_tmp(out)
    except (OSError, ValueError) as exc:
        log(f"error: --out {str(out)!r} cannot be used as the backup directory: {one_line(str(exc))}")
        return EXIT_USAGE
    index = Index(out)
    try:
        index.load()
    except (OSError, ValueError) as exc:
        log(f"error: --out {str(out)!r} holds an index.json this script cannot use: {one_line(str(exc))}")
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
        log(f"error: --out {str(out)!r} is not writable: {one_line(str(exc))}")
        return EXIT_USAGE
    failed: list[str] = []
    listing_failures: list[str] = []
    kept: list[str] = []  # missing from a complete listing, still served
    unchecked: list[str] = []  # missing from a complete listing, its own GET answered neither 404 nor 200
    complete = False
    try:
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            gateway = Gateway(session, args.gateway, args.retries, sleep=sleep, clock=clock)
            backup = Backup(gateway, out, index, CONCURRENCY)
            for src in sources:
                outcome = await backup.run_source(src)
                failed += outcome.failed
                kept += outcome.kept_unlisted
                unchecked += outcome.unchecked
                if outcome.listing_failed:
                    listing_failures.append(f"{src.label}: {outcome.listing_failed}")
        complete = not failed and not listing_failures
    except Fatal as exc:
        log(f"error: {exc}")
        return EXIT_PARTIAL
    finally:  # also on interruption: whatever was saved is recorded
        index.set("run_finished_at", now())
        index.set("complete", complete)
        try:
            index.save()
            unsaved = None
        except OSError as exc:
            unsaved = f"error: {str(index.path)!r} could not be written: {one_line(str(exc))}; run again"
            log(unsaved)
    if unsaved:
        return EXIT_PARTIAL
    if complete:
        print(f"backup complete: {len(index.notebooks)} notebooks in {out}")
        _print_unlisted(kept, unchecked)
        return EXIT_OK
    print(f"backup INCOMPLETE: {len(failed)} notebook(s) failed, {len(listing_failures)} listing(s) failed")
    for line in listing_failures:
        print(f"  {_printable(line)}")
    for key in failed[:20]:
        print(f"  {key}: {_printable(str(index.failures.get(key, {}).get('error')))}")
    if len(failed) > 20:
        print(f"  ... and {len(failed) - 20} more (see 'failures' in {index.path})")
    _print_unlisted(kept, unchecked)
    print("Everything else is saved; run the same command again to retry what failed.")
    return EXIT_PARTIAL


def _print_unlisted(kept: list[str], unchecked: list[str]) -> None:
    """The notebooks a complete listing lacked that are not gone: the listing is wrong, or unproven."""
    if kept:
        print(
            f"{len(kept)} notebook(s) missing from a complete listing are still served (kept, not marked gone): "
            + ", ".join(kept[:20])
            + (" ..." if len(kept) > 20 else "")
        )
    if unchecked:
        print(
            f"{len(unchecked)} notebook(s) missing from a complete listing could not be checked "
            "(left unmarked; the next run asks again):"
        )
        for line in unchecked[:20]:
            print(f"  {_printable(line)}")
        if len(unchecked) > 20:
            print(f"  ... and {len(unchecked) - 20} more")


def _printable(text: str) -> str:
    """A message may quote what a server sent, lone surrogates included: stdout must not choke on it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
