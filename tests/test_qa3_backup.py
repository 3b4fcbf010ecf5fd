"""examples/backup_notebooks.py: one odd notebook fails alone, a live one is never marked gone, one writer per --out.

1. A lone surrogate (``"\\ud83d"``, legal JSON) in a notebook is saved escaped, never a traceback;
   a notebook whose file cannot be written fails alone, with no ``.tmp`` left.
2. A notebook a complete listing lacks is marked ``gone_since`` only once its own GET answers
   404; a 200 keeps it (its document saved), anything else leaves it unmarked and the summary says so.
3. Two runs into one ``--out``: the second exits 2 at once; the lock dies with its holder (kill -9).

Real gateway and sandboxes (the script as a subprocess), or a stand-in gateway on a fake clock.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.helpers.backup import Stack
from tests.helpers.backup_fake import LIST, FakeGateway, FakeTime, backup, error, index, notebooks, saved

CUT = "cut emoji \ud83d"  # a lone high surrogate: what "\ud83d" in JSON decodes to


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def fake(fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeGateway, str]]:
    monkeypatch.delenv("ROUTEGATE_API_KEY", raising=False)
    monkeypatch.delenv("POSTHOG_PROJECT_ID", raising=False)
    gw = FakeGateway(fake_time, notebooks(12))
    server = TestServer(gw.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield gw, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def tmp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp")]


async def wait_for(cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def posthog_file(stack: Stack, short_id: str, project: int = 1) -> Any:
    return json.loads((stack.out / "posthog" / str(project) / f"{short_id}.json").read_text(encoding="utf-8"))


def asked(stack: Stack, short_id: str, project: int = 1) -> int:
    """The upstream GETs of one PostHog notebook."""
    return stack.ph.requests.get(("GET", f"/api/projects/{project}/notebooks/{short_id}/"), 0)


# --------------------------------------------------------------------------- 1. one odd notebook fails alone


async def test_a_lone_surrogate_in_a_title_is_saved_escaped_through_the_real_gateway(stack: Stack) -> None:
    odd = stack.ph.visible(1)[3]
    odd.title = CUT
    run = await stack.backup("--observable-types", "", "--posthog-project", "1")
    assert run.code == 0, run.stderr
    assert "Traceback" not in run.stderr and "UnicodeEncodeError" not in run.stderr
    visible = stack.ph.visible(1)
    assert f"backup complete: {len(visible)} notebooks" in run.stdout
    # the file is valid JSON (escaped, so plain ASCII) and reads back to the very same value
    raw = (stack.out / "posthog" / "1" / f"{odd.short_id}.json").read_bytes()
    assert b"\\ud83d" in raw and raw.isascii()
    doc = posthog_file(stack, odd.short_id)
    assert doc["title"] == CUT and doc["content"] == odd.content
    # the index holds the listed title too: it is saved the same way
    assert stack.index()["notebooks"][f"posthog/1/{odd.short_id}"]["title"] == CUT
    assert all(posthog_file(stack, nb.short_id)["title"] == nb.title for nb in visible)
    assert tmp_files(stack.out) == []
    # the next run reads that index back and finds nothing to fetch
    before = stack.posthog_fetches()
    again = await stack.backup("--observable-types", "", "--posthog-project", "1")
    assert again.code == 0, again.stderr
    assert stack.posthog_fetches() == before


async def test_a_document_with_a_lone_surrogate_is_saved_and_other_files_stay_utf8(
    fake: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw, url = fake
    gw.notebooks[2]["title"] = CUT
    gw.notebooks[5]["title"] = "café ☕"
    out = tmp_path / "out"
    code = await backup(url, out, fake_time)
    _, err = capsys.readouterr()
    assert code == 0, err
    assert saved(out) == {nb["id"] for nb in gw.notebooks}
    assert json.loads((out / "observable" / "nb002.json").read_text(encoding="utf-8"))["title"] == CUT
    # only a document UTF-8 cannot hold is escaped: the others are written as before
    assert "café ☕" in (out / "observable" / "nb005.json").read_text(encoding="utf-8")
    assert index(out)["notebooks"]["observable/nb002"]["title"] == CUT
    assert tmp_files(out) == []


async def test_a_notebook_whose_file_cannot_be_written_fails_alone_without_a_tmp_left(
    fake: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw, url = fake
    out = tmp_path / "out"
    (out / "observable" / "nb004.json").mkdir(parents=True)  # the rename onto it fails (IsADirectoryError)
    code = await backup(url, out, fake_time)
    stdout, err = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in err
    failed = [line for line in err.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and failed[0].startswith("observable/nb004: FAILED: cannot write observable/nb004.json")
    assert "backup INCOMPLETE: 1 notebook(s) failed" in stdout
    assert saved(out) == {nb["id"] for nb in gw.notebooks}  # nb004 is the directory; every other was written
    assert (out / "observable" / "nb004.json").is_dir()
    assert tmp_files(out) == []
    assert set(index(out)["failures"]) == {"observable/nb004"}


async def test_an_index_that_cannot_be_written_mid_run_is_one_error_line_not_a_traceback(
    fake: tuple[FakeGateway, str],
    fake_time: FakeTime,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw, url = fake
    out = tmp_path / "out"
    store = sys.modules["notebook_backup.store"]
    real = store.write_json_atomic
    writes = {"index": 0}

    def full_disk_for_the_index(path: Path, data: Any) -> None:
        if path.name == "index.json" and data.get("notebooks"):  # once a notebook is saved, the disk is full
            writes["index"] += 1
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(store, "write_json_atomic", full_disk_for_the_index)
    monkeypatch.setattr(store, "INDEX_SAVE_EVERY", 0.0)  # every recorded notebook tries a save
    code = await backup(url, out, fake_time)
    _, err = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: {str(out / 'index.json')!r} could not be written: [Errno 28] No space left on device; run again"
    ]
    assert saved(out) == {nb["id"] for nb in gw.notebooks}
    assert writes["index"] > len(gw.notebooks)  # each notebook's save was tried during the run, and failed quietly


# --------------------------------------------------------------------------- 2. missing from a listing is not gone


async def test_a_live_notebook_missing_from_a_complete_listing_is_kept_and_its_document_saved(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await stack.backup("--observable-types", "", "--posthog-project", "1")
    assert first.code == 0, first.stderr
    visible = stack.ph.visible(1)
    hidden, deleted = visible[4], visible[7]
    # the upstream's listing drops a live notebook (edited meanwhile), and one notebook is really deleted
    hidden.title = "edited while unlisted"
    hidden.version += 1
    deleted.deleted = True
    listing = stack.ph.visible
    monkeypatch.setattr(stack.ph, "visible", lambda p: [nb for nb in listing(p) if nb is not hidden])
    stack.ph.requests.clear()
    run = await stack.backup("--observable-types", "", "--posthog-project", "1")
    assert run.code == 0, run.stderr
    # only the two candidates are asked for, each once (the gateway may probe a listed one to tell a 404 apart)
    assert asked(stack, hidden.short_id) == asked(stack, deleted.short_id) == 1
    assert stack.posthog_fetches() <= 3
    entries = stack.index()["notebooks"]
    assert "gone_since" not in entries[f"posthog/1/{hidden.short_id}"]
    assert "gone_since" in entries[f"posthog/1/{deleted.short_id}"]
    assert [k for k, e in entries.items() if "gone_since" in e] == [f"posthog/1/{deleted.short_id}"]
    doc = posthog_file(stack, hidden.short_id)
    assert doc["title"] == "edited while unlisted" and doc["version"] == hidden.version
    assert entries[f"posthog/1/{hidden.short_id}"]["title"] == "edited while unlisted"
    assert f"posthog/1/{hidden.short_id}" in run.stdout and "still served" in run.stdout
    assert (stack.out / "posthog" / "1" / f"{deleted.short_id}.json").is_file()  # a gone notebook keeps its file
    # still unlisted next run: asked again, still kept; the one marked gone is not asked again
    again = await stack.backup("--observable-types", "", "--posthog-project", "1")
    assert again.code == 0, again.stderr
    assert asked(stack, hidden.short_id) == 2 and asked(stack, deleted.short_id) == 1
    assert "gone_since" not in stack.index()["notebooks"][f"posthog/1/{hidden.short_id}"]


def seed(out: Path, ids: list[str]) -> None:
    """A previous backup holding notebooks (with their files)."""
    (out / "observable").mkdir(parents=True)
    entries = {}
    for nb_id in ids:
        (out / "observable" / f"{nb_id}.json").write_text('{"old": true}')
        entries[f"observable/{nb_id}"] = {
            "source": "observable",
            "id": nb_id,
            "type": "public",
            "updated_at": "2025-01-01",
            "version": 0,
            "file": f"observable/{nb_id}.json",
        }
    (out / "index.json").write_text(json.dumps({"format": 1, "notebooks": entries, "failures": {}}))


async def test_only_a_404_not_found_marks_gone_any_other_answer_leaves_it_unmarked(
    fake: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw, url = fake
    out = tmp_path / "out"
    # nb003 is live but the listing lacks it; old1 is deleted; old2's GET fails; old3's route is unknown
    seed(out, ["nb003", "old1", "old2", "old3"])
    live = gw.notebooks[3]

    def hook(request: web.Request, g: FakeGateway) -> web.Response | None:
        if request.path == LIST and live in g.notebooks:
            g.notebooks.remove(live)  # the listing is read without it ...
        if request.path == f"{LIST}/nb003":
            return web.json_response({**live, "nodes": []})  # ... yet its own GET serves it
        if request.path == f"{LIST}/old2":
            return error(502, "upstream_unavailable", "observable_notebook")
        if request.path == f"{LIST}/old3":
            return error(404, "no_route", "")
        return None

    gw.hook = hook
    code = await backup(url, out, fake_time, "--retries", "1")
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err
    entries = index(out)["notebooks"]
    assert {k for k, e in entries.items() if "gone_since" in e} == {"observable/old1"}
    # the live one is kept, and its document (changed) saved
    assert json.loads((out / "observable" / "nb003.json").read_text())["id"] == "nb003"
    assert "1 notebook(s) missing from a complete listing are still served" in stdout and "observable/nb003" in stdout
    assert "2 notebook(s) missing from a complete listing could not be checked" in stdout
    assert "observable/old2: 502 upstream_unavailable" in stdout and "observable/old3: 404 no_route" in stdout
    # only the candidates were asked for beyond the listed notebooks; the unchecked are asked again next run
    asked = [h.path for h in gw.details()]
    assert sorted(p for p in asked if p.rsplit("/", 1)[1] in {"nb003", "old1", "old3"}) == [
        f"{LIST}/nb003",
        f"{LIST}/old1",
        f"{LIST}/old3",
    ]
    assert asked.count(f"{LIST}/old2") == 2  # the retry spent, then left unmarked
    gw.hits.clear()
    code = await backup(url, out, fake_time, "--retries", "0")
    capsys.readouterr()
    assert code == 0
    assert sorted(h.path for h in gw.details()) == [f"{LIST}/nb003", f"{LIST}/old2", f"{LIST}/old3"]


async def test_a_notebook_moved_to_the_trash_is_gone_when_the_trash_is_not_backed_up(
    fake: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw, url = fake
    out = tmp_path / "out"
    seed(out, ["trashed1"])

    def hook(request: web.Request, g: FakeGateway) -> web.Response | None:
        if request.path == f"{LIST}/trashed1":  # Observable still serves a trashed document by its id
            return web.json_response({"id": "trashed1", "trashed": True, "version": 3, "nodes": []})
        return None

    gw.hook = hook
    code = await backup(url, out, fake_time)
    _, err = capsys.readouterr()
    assert code == 0, err
    entry = index(out)["notebooks"]["observable/trashed1"]
    assert "gone_since" in entry
    assert json.loads((out / "observable" / "trashed1.json").read_text()) == {"old": True}  # the file is kept


# --------------------------------------------------------------------------- 3. one writer per --out


async def test_a_second_run_into_a_locked_out_exits_2_at_once(stack: Stack) -> None:
    stack.out.mkdir()
    fd = os.open(stack.out / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        started = time.monotonic()
        run = await stack.backup("--observable-types", "", "--posthog-project", "2")
        assert run.code == 2
        assert time.monotonic() - started < 10
        lines = run.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        assert str(stack.out) in lines[0] and "another backup is writing into it" in lines[0]
        assert run.stdout == "" and not (stack.out / "index.json").exists()
        assert stack.posthog_fetches() == 0
    finally:
        os.close(fd)
    run = await stack.backup("--observable-types", "", "--posthog-project", "2")
    assert run.code == 0, run.stderr


async def test_two_runs_into_one_out_never_lose_each_others_entries_and_a_kill_frees_it(stack: Stack) -> None:
    stack.ph.apply_switches({"latency_ms": 300})
    first = await stack.start("--observable-types", "", "--posthog-project", "1")
    await wait_for(lambda: stack.posthog_fetches() >= 3, "the first run's downloads")
    second = await stack.backup("--observable-types", "", "--posthog-project", "2")
    assert second.code == 2 and "another backup is writing into it" in second.stderr
    out, err = await asyncio.wait_for(first.communicate(), 60)
    assert first.returncode == 0, err.decode()
    assert "backup complete" in out.decode()
    keys = stack.index()["notebooks"]
    assert {k for k in keys if k.startswith("posthog/1/")} == {f"posthog/1/{nb.short_id}" for nb in stack.ph.visible(1)}
    # a run killed outright holds nothing: the kernel drops its lock with it
    killed = await stack.start("--observable-types", "", "--posthog-project", "2")
    fetched = stack.posthog_fetches()
    await wait_for(lambda: stack.posthog_fetches() > fetched, "the killed run's first download")
    killed.send_signal(signal.SIGKILL)
    await killed.wait()
    stack.ph.apply_switches({"latency_ms": 0})
    run = await stack.backup("--observable-types", "", "--posthog-project", "2")
    assert run.code == 0, run.stderr
    keys = stack.index()["notebooks"]
    assert {k for k in keys if k.startswith("posthog/2/")} == {f"posthog/2/{nb.short_id}" for nb in stack.ph.visible(2)}
    assert {k for k in keys if k.startswith("posthog/1/")} == {f"posthog/1/{nb.short_id}" for nb in stack.ph.visible(1)}
