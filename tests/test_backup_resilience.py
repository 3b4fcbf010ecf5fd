"""examples/backup_notebooks.py stops, waits or restarts as a careful script would.

Dead upstream credentials are driven through the real gateway and sandboxes (the script as a
subprocess); pacing, broken routes and a changing listing through a stand-in gateway on a real
socket, with the script run in-process on a fake clock, so its waits cost no real time.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.helpers.backup import SCRIPT, Stack
from tests.helpers.backup_fake import (
    LIST,
    FakeGateway,
    FakeTime,
    Hook,
    backup,
    bn,
    error,
    index,
    notebooks,
    saved,
    token_bucket,
)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def fake(fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeGateway, str]]:
    monkeypatch.delenv("ROUTEGATE_API_KEY", raising=False)
    monkeypatch.delenv("POSTHOG_PROJECT_ID", raising=False)
    gw = FakeGateway(fake_time, notebooks(60))  # two pages of 50
    server = TestServer(gw.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield gw, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


# --------------------------------------------------------------------------- 1. dead upstream credentials


async def test_dead_upstream_credentials_stop_the_run_at_once(stack: Stack) -> None:
    """The gateway's Observable session is expired: 502 upstream_auth_rejected is not retried."""
    stack.obs.apply_switches({"session_expired": True})
    started = time.monotonic()
    run = await stack.backup("--observable-types", "private")
    assert run.code == 1, run.stderr
    assert time.monotonic() - started < 10
    assert "retry" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, run.stderr
    assert "upstream_auth_rejected" in lines[0] and "observable_notebooks" in lines[0] and "renewed" in lines[0]
    assert "Traceback" not in run.stderr
    assert stack.document_fetches() == 0


async def test_credentials_that_die_mid_run_stop_it_without_failing_notebooks_in_turn(stack: Stack) -> None:
    stack.obs.apply_switches({"latency_ms": 20})
    proc = await stack.start("--observable-types", "public,shared,private")
    deadline = time.monotonic() + 30
    while stack.document_fetches() < 5:
        assert time.monotonic() < deadline, "the run never got under way"
        await asyncio.sleep(0.005)
    stack.obs.apply_switches({"session_expired": True})
    expired_at = time.monotonic()
    _, err_bytes = await asyncio.wait_for(proc.communicate(), 30)
    err = err_bytes.decode()
    assert proc.returncode == 1, err
    assert time.monotonic() - expired_at < 10  # not 6 retries per notebook, notebook after notebook
    assert "retry" not in err and "FAILED" not in err
    assert "upstream_auth_rejected" in err
    idx = stack.index()
    assert idx["complete"] is False
    assert idx["failures"] == {}  # the notebooks are not at fault: the next run fetches them
    assert 0 < len(idx["notebooks"]) < len(stack.observable_expected())
    assert not any("gone_since" in e for e in idx["notebooks"].values())


# --------------------------------------------------------------------------- 2. the gateway's pacing


async def test_a_rate_limit_slows_the_backup_down_and_never_fails_it(
    fake: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw, url = fake
    gw.hook = token_bucket(5)
    started = fake_time.now()
    code = await backup(url, tmp_path / "out", fake_time, "--retries", "0")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "backup complete: 60 notebooks" in out
    assert saved(tmp_path / "out") == {nb["id"] for nb in gw.notebooks}
    limited = [h for h in gw.hits if h.status == 429]
    assert limited, "the limit never bit: the test proves nothing"
    assert "FAILED" not in err and "retry" not in err
    # 62 requests at 5/s: the run took (fake) time, the limit slowed it down
    assert fake_time.now() - started >= (len(gw.hits) - len(limited) - 5) / 5


async def test_one_workers_pause_holds_every_worker(
    fake: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once a 429 says wait, no worker asks again until the pause is over: time stands still
    right after the 429, and the stand-in sees nothing new while it does."""
    gw, url = fake
    told: list[float] = []

    def once(request: web.Request, gw: FakeGateway) -> web.Response | None:
        if not told and request.path != LIST and len(gw.details()) >= 8:
            told.append(gw.time.now())
            gw.time.freeze()
            return error(429, "rate_limited", "observable_notebook", {"Retry-After": "5"})
        return None

    gw.hook = once
    run = asyncio.create_task(backup(url, tmp_path / "out", fake_time, "--retries", "0"))
    deadline = time.monotonic() + 20
    while not told:
        assert time.monotonic() < deadline and not run.done()
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.3)  # real time: without a shared pause the other workers fetch dozens meanwhile
    limited = [h.status for h in gw.hits].index(429)
    after = len(gw.hits) - 1 - limited
    # requests already on the wire when the 429 was answered may still arrive: one per other task at most
    assert after <= bn.CONCURRENCY, gw.hits[-after:]
    fake_time.thaw()
    code = await asyncio.wait_for(run, 20)
    assert code == 0, capsys.readouterr().err
    assert saved(tmp_path / "out") == {nb["id"] for nb in gw.notebooks}
    assert all(h.at >= told[0] + 5 for h in gw.hits[limited + 1 + after :])  # every later request waited


async def test_a_gateway_that_only_says_wait_ends_the_run_after_the_limit(
    fake: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw, url = fake
    gw.hook = lambda request, gw: error(503, "circuit_open", "observable_notebooks", {"Retry-After": "30"})
    started = fake_time.now()
    code = await backup(url, tmp_path / "out", fake_time)
    _, err = capsys.readouterr()
    assert code == 1
    assert "said to wait" in err and "circuit_open" in err
    assert bn.PACED_LIMIT <= fake_time.now() - started <= bn.PACED_LIMIT * 1.2 + 40
    assert len(gw.hits) <= bn.PACED_LIMIT / 30 + 2


# --------------------------------------------------------------------------- 1b. per code: what a retry can heal


async def test_a_route_broken_for_every_notebook_stops_the_run_after_a_few(
    fake: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw, url = fake
    gw.hook = lambda request, gw: (
        error(502, "upstream_route_gone", "observable_notebook") if request.path != LIST else None
    )
    code = await backup(url, tmp_path / "out", fake_time, "--retries", "2")
    _, err = capsys.readouterr()
    assert code == 1
    assert "upstream_route_gone on route observable_notebook" in err and "stopping" in err
    failed = index(tmp_path / "out")["failures"]
    assert bn.BROKEN_AFTER <= len(failed) < bn.BROKEN_AFTER + bn.CONCURRENCY  # not all 60, one after another
    assert len(gw.details()) <= 3 * (bn.BROKEN_AFTER + bn.CONCURRENCY - 1)


@pytest.mark.parametrize(("code", "tries"), [("shape_drift", 3), ("upstream_too_large", 1)])
async def test_one_odd_notebook_fails_alone(
    fake: tuple[FakeGateway, str],
    fake_time: FakeTime,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    code: str,
    tries: int,
) -> None:
    """A mapping code on one notebook fails that notebook (after retries only where a reload could heal it)."""
    gw, url = fake
    gw.hook = lambda request, gw: error(502, code, "observable_notebook") if request.path.endswith("nb007") else None
    assert await backup(url, tmp_path / "out", fake_time, "--retries", "2") == 1
    out, _ = capsys.readouterr()
    assert "backup INCOMPLETE: 1 notebook(s) failed" in out
    assert len([h for h in gw.details() if h.path.endswith("nb007")]) == tries
    assert saved(tmp_path / "out") == {nb["id"] for nb in gw.notebooks} - {"nb007"}


# --------------------------------------------------------------------------- 4. a listing that changes while it is read


def changing(times: int, code: str = "collection_changed") -> Hook:
    """The cursor page answers 409 ``code`` ``times`` times (-1: always)."""
    left = {"n": times}

    def hook(request: web.Request, gw: FakeGateway) -> web.Response | None:
        if request.path == LIST and "cursor" in request.query and left["n"] != 0:
            left["n"] -= 1
            return error(409, code, "observable_notebooks")
        return None

    return hook


def seed_index(out: Path, ids: list[str]) -> None:
    """A previous backup of these (public) notebooks, files and all."""
    (out / "observable").mkdir(parents=True)
    entries = {}
    for nb_id in ids:
        (out / "observable" / f"{nb_id}.json").write_text("{}")
        entries[f"observable/{nb_id}"] = {
            "source": "observable",
            "id": nb_id,
            "type": "public",
            "updated_at": "2025-01-01",
            "version": 0,
            "file": f"observable/{nb_id}.json",
        }
    (out / "index.json").write_text(json.dumps({"format": 1, "notebooks": entries, "failures": {}}))


async def test_a_listing_that_changed_is_read_again_from_the_first_page(
    fake: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw, url = fake
    out = tmp_path / "out"
    deleted = gw.notebooks[3]  # listed by the first walk, deleted before the walk that completes
    seed_index(out, ["nb003", "old999"])

    def hook(request: web.Request, g: FakeGateway) -> web.Response | None:
        answer = changing(1)(request, g) if not any(h.status == 409 for h in g.hits) else None
        if answer is not None and deleted in g.notebooks:
            g.notebooks.remove(deleted)
        return answer

    gw.hook = hook
    code = await backup(url, out, fake_time)
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "collection_changed" in err and "from the first page" in err
    assert [h.cursor for h in gw.listings()] == [None, "50", None, "50"]
    # each notebook fetched once, though the first page was listed twice
    paths = [h.path for h in gw.details()]
    assert len(paths) == len(set(paths)) and set(paths) >= {f"{LIST}/{nb['id']}" for nb in gw.notebooks}
    assert "] 60/60 " in err  # the progress counts each notebook once, whichever walks listed it
    notebooks = index(out)["notebooks"]
    assert "gone_since" in notebooks["observable/old999"]  # the complete walk does not list it
    assert "gone_since" in notebooks["observable/nb003"]  # only the aborted walk listed it
    gone = {k for k, e in notebooks.items() if "gone_since" in e}
    assert gone == {"observable/old999", "observable/nb003"}


async def test_a_cursor_outdated_by_a_gateway_upgrade_reads_the_listing_again(
    fake: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gateway upgraded mid-walk refuses the cursors it issued before (409 cursor_outdated): the
    listing starts again from its first page, as after a list that moved."""
    gw, url = fake
    gw.hook = changing(1, "cursor_outdated")
    code = await backup(url, tmp_path / "out", fake_time)
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "409 cursor_outdated" in err and "from the first page" in err
    assert [h.cursor for h in gw.listings()] == [None, "50", None, "50"]
    paths = [h.path for h in gw.details()]
    assert len(paths) == len(set(paths)) == len(gw.notebooks)


async def test_a_listing_that_keeps_changing_fails_and_marks_nothing_gone(
    fake: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw, url = fake
    out = tmp_path / "out"
    seed_index(out, ["old999"])
    gw.hook = changing(-1)
    code = await backup(url, out, fake_time)
    stdout, _ = capsys.readouterr()
    assert code == 1
    assert "1 listing(s) failed" in stdout and "collection_changed" in stdout and "kept changing" in stdout
    assert len([h for h in gw.listings() if h.cursor is None]) == bn.LISTING_RESTARTS + 1
    idx = index(out)
    assert "gone_since" not in idx["notebooks"]["observable/old999"]
    assert idx["complete"] is False
    # what the first pages listed is still backed up
    assert saved(out) >= {nb["id"] for nb in gw.notebooks[:50]}


# --------------------------------------------------------------------------- 3. usage mistakes


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--gateway", "127.0.0.1:8181"], "http:// or https://"),
        (["--gateway", "ftp://127.0.0.1:8181"], "http:// or https://"),
        (["--gateway", "http://127.0.0.1:99999"], "not a URL"),
        (["--gateway", "http://127.0.0.1:8181/?x=1"], "base URL only"),
        (["--retries", "-1"], "--retries"),
        (["--retries", "100000"], "--retries"),
        (["--retries", "many"], "--retries"),
        (["--api-key", "two words"], "--api-key"),
        (["--posthog-project", "١٢"], "numeric"),
        (["--observable-types", "public,drafts"], "drafts"),
        (["--observable-types", ""], "nothing to back up"),
    ],
)
def test_usage_mistakes_exit_2_with_one_line(
    args: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POSTHOG_PROJECT_ID", raising=False)
    defaults = {"--gateway": "http://127.0.0.1:1", "--out": str(tmp_path / "out")}
    for name, value in defaults.items():
        if name not in args:
            args = [*args, name, value]
    with pytest.raises(SystemExit) as exit_:
        bn.main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and says in err, err
    assert "two words" not in err  # a key is never echoed


def test_an_out_that_cannot_be_a_backup_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    with pytest.raises(SystemExit) as exit_:
        bn.main(["--gateway", "http://127.0.0.1:1", "--out", str(a_file)])
    assert exit_.value.code == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    # under a file: found only when creating it
    assert bn.main(["--gateway", "http://127.0.0.1:1", "--out", str(a_file / "sub")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "cannot be used as the backup directory" in err
    # a directory holding some other index.json
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.json").write_text('{"format": 99}')
    assert bn.main(["--gateway", "http://127.0.0.1:1", "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "index.json" in err
    (other / "index.json").unlink()
    (other / "index.json").mkdir()
    assert bn.main(["--gateway", "http://127.0.0.1:1", "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "index.json" in err


async def test_usage_mistakes_run_as_a_user_runs_it_show_no_traceback(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for args in (
        ["--gateway", "127.0.0.1:8181", "--out", str(tmp_path)],
        ["--gateway", "http://x", "--out", str(a_file)],
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPT), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 2
        assert len(err.decode().splitlines()) == 1 and "Traceback" not in err.decode()
