"""examples/backup_notebooks.py and 403s, and its listing window under a rate limit.

``upstream_forbidden`` (the upstream refused the gateway's credential this call: a missing
permission or scope) is never retried: a refused listing stops the run at once, notebooks
refused one by one stop it after ``BROKEN_AFTER``, a single odd one fails alone. A source's
whole listing is read before any download, so an edit can only make the listing 409 while the
listing itself is read. Driven through the real gateway and PostHog sandbox (the script as a
subprocess), and through a stand-in gateway on a fake clock (the script in-process).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.helpers.backup import Stack
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


async def _serve(gw: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeGateway, str]]:
    monkeypatch.delenv("ROUTEGATE_API_KEY", raising=False)
    monkeypatch.delenv("POSTHOG_PROJECT_ID", raising=False)
    server = TestServer(gw.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield gw, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def fake(fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeGateway, str]]:
    async for served in _serve(FakeGateway(fake_time, notebooks(60)), monkeypatch):  # two pages of 50
        yield served


@pytest.fixture
async def big(fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeGateway, str]]:
    async for served in _serve(FakeGateway(fake_time, notebooks(250)), monkeypatch):  # five pages of 50
        yield served


def forbidden(route: str) -> web.Response:
    """The gateway's answer when the upstream refuses its credential (PostHog's missing scope)."""
    body = {
        "error": {
            "code": "upstream_forbidden",
            "message": "the upstream refused the credential: API key missing required scope 'notebook:read'",
            "route": route,
        }
    }
    return web.json_response(body, status=502)


def seed_gone_candidate(out: Path) -> None:
    """A previous backup holding a notebook no listing shows: only a complete listing may mark it gone."""
    (out / "observable").mkdir(parents=True)
    (out / "observable" / "old999.json").write_text("{}")
    entry = {"source": "observable", "id": "old999", "type": "public", "updated_at": "2025-01-01", "version": 0}
    entry["file"] = "observable/old999.json"
    index_data = {"format": 1, "notebooks": {"observable/old999": entry}, "failures": {}}
    (out / "index.json").write_text(json.dumps(index_data))


# --------------------------------------------------------------------------- 1. 403s: through the real gateway


async def test_a_key_without_the_read_scope_stops_the_run_at_its_listing(stack: Stack) -> None:
    """PostHog refuses the gateway's key (no ``notebook:read``): one line, no retries, seconds not 34 s."""
    (gateway_key,) = stack.ph.api_keys  # the sandbox accepts only the gateway's key
    stack.ph.base_scopes[gateway_key] = frozenset({"notebook:write"})
    started = time.monotonic()
    run = await stack.backup("--posthog-project", "1", "--observable-types", "")
    assert run.code == 1, run.stderr
    assert time.monotonic() - started < 10
    assert not [line for line in run.stderr.splitlines() if line.startswith("retry ")], run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, run.stderr
    assert "upstream_forbidden on route posthog_notebooks" in lines[0] and "notebook:read" in lines[0]
    assert "Traceback" not in run.stderr
    listings = sum(n for (m, p), n in stack.ph.requests.items() if m == "GET" and p.endswith("/notebooks/"))
    assert listings == 1  # not retried by the script
    assert stack.posthog_fetches() == 0
    assert stack.index()["complete"] is False


async def test_notebooks_refused_one_by_one_stop_the_run_after_a_few(stack: Stack) -> None:
    """A 403 on every notebook (listing allowed): the route is refused, not 30 notebooks, one after another."""
    visible = stack.ph.visible(1)
    stack.ph.apply_switches(
        {"faults": {f"/api/projects/1/notebooks/{nb.short_id}/": {"status": 403} for nb in visible}}
    )
    started = time.monotonic()
    run = await stack.backup("--posthog-project", "1", "--observable-types", "")
    assert run.code == 1, run.stderr
    assert time.monotonic() - started < 10
    assert not [line for line in run.stderr.splitlines() if line.startswith("retry ")], run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, run.stderr
    assert "upstream_forbidden on route posthog_notebook:" in lines[0] and "stopping" in lines[0]
    failed = stack.index()["failures"]
    assert bn.BROKEN_AFTER <= len(failed) < bn.BROKEN_AFTER + bn.CONCURRENCY  # not all 30
    # each refused notebook asked for once: a permission does not appear by retrying
    fetches = [n for (m, p), n in stack.ph.requests.items() if m == "GET" and p.count("/") == 6]
    assert fetches and max(fetches) == 1 and len(fetches) < bn.BROKEN_AFTER + bn.CONCURRENCY


# --------------------------------------------------------------------------- 1b. 403s: on a stand-in, per case


@pytest.mark.parametrize("refused_page", [None, "50"])
async def test_a_refused_listing_stops_the_run_and_marks_nothing_gone(
    fake: tuple[FakeGateway, str],
    fake_time: FakeTime,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    refused_page: str | None,
) -> None:
    gw, url = fake
    out = tmp_path / "out"
    seed_gone_candidate(out)
    gw.hook = lambda request, g: (
        forbidden("observable_notebooks")
        if request.path == LIST and request.query.get("cursor") == refused_page
        else None
    )
    code = await backup(url, out, fake_time, "--retries", "6")
    _, err = capsys.readouterr()
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "upstream_forbidden on route observable_notebooks" in lines[0] and "permission or scope" in lines[0]
    assert [h.status for h in gw.listings()][-1] == 502
    assert len([h for h in gw.listings() if h.cursor == refused_page]) == 1  # never retried
    assert fake_time.slept == []  # no backoff either
    assert gw.details() == []  # the listing comes first, and it never finished
    idx = index(out)
    assert idx["complete"] is False and idx["failures"] == {}
    assert "gone_since" not in idx["notebooks"]["observable/old999"]


async def test_one_refused_notebook_fails_alone_without_retries(
    fake: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw, url = fake
    gw.hook = lambda request, g: forbidden("observable_notebook") if request.path.endswith("/nb007") else None
    code = await backup(url, tmp_path / "out", fake_time, "--retries", "6")
    out, err = capsys.readouterr()
    assert code == 1
    assert "backup INCOMPLETE: 1 notebook(s) failed" in out and "upstream_forbidden" in out
    assert not [line for line in err.splitlines() if line.startswith("error:")]  # the run was not stopped
    assert len([h for h in gw.details() if h.path.endswith("/nb007")]) == 1
    assert fake_time.slept == []
    assert saved(tmp_path / "out") == {nb["id"] for nb in gw.notebooks} - {"nb007"}
    assert set(index(tmp_path / "out")["failures"]) == {"observable/nb007"}


async def test_refused_notebooks_of_a_route_stop_the_run_after_a_few(
    fake: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw, url = fake
    gw.hook = lambda request, g: forbidden("observable_notebook") if request.path != LIST else None
    code = await backup(url, tmp_path / "out", fake_time, "--retries", "6")
    _, err = capsys.readouterr()
    assert code == 1
    assert "upstream_forbidden on route observable_notebook:" in err and "stopping" in err
    failed = index(tmp_path / "out")["failures"]
    assert bn.BROKEN_AFTER <= len(failed) < bn.BROKEN_AFTER + bn.CONCURRENCY
    paths = [h.path for h in gw.details()]
    assert len(paths) == len(set(paths)) < bn.BROKEN_AFTER + bn.CONCURRENCY  # each once, then the run stops
    assert fake_time.slept == []


# --------------------------------------------------------------------------- 2. the listing window


def edited_every(seconds: float, rate: float) -> Hook:
    """A client key limited to ``rate``/s, and a user editing a notebook every ``seconds`` (fake clock).

    A cursor page answers 409 ``collection_changed`` when an edit happened since its walk's first
    page, as the gateway does when the collection moved under a cursor.
    """
    limit = token_bucket(rate)
    state = {"next_edit": 0.0, "last_edit": -1.0, "walk_started": 0.0, "edits": 0}

    def hook(request: web.Request, gw: FakeGateway) -> web.Response | None:
        t = gw.time.now()
        if not state["next_edit"]:
            state["next_edit"] = t + seconds
        while t >= state["next_edit"]:
            nb = gw.notebooks[int(state["edits"]) % len(gw.notebooks)]
            nb["updated_at"] = f"2026-02-{int(state['edits']) % 28 + 1:02d}"
            state["last_edit"] = state["next_edit"]
            state["next_edit"] += seconds
            state["edits"] += 1
        limited = limit(request, gw)
        if limited is not None:
            return limited
        if request.path == LIST:
            if "cursor" not in request.query:
                state["walk_started"] = t
            elif state["last_edit"] >= state["walk_started"]:
                return error(409, "collection_changed", "observable_notebooks")
        return None

    return hook


async def test_a_rate_limited_backup_under_editing_lists_first_and_completes(
    big: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """250 notebooks at 5/s with an edit every 8 s: the 50 s of downloads no longer sit inside the listing."""
    gw, url = big
    gw.hook = edited_every(8, 5)
    started = fake_time.now()
    code = await backup(url, tmp_path / "out", fake_time, "--retries", "0")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "backup complete: 250 notebooks" in out
    assert fake_time.now() - started >= 250 / 5 - 5  # the limit bit: the edits happened during the run
    assert any(h.status == 429 for h in gw.hits), "the limit never bit: the test proves nothing"
    ok = [i for i, h in enumerate(gw.hits) if h.status == 200]
    first_detail = next(i for i in ok if gw.hits[i].path != LIST)
    assert all(gw.hits[i].path != LIST for i in ok if i > first_detail)  # every listing page came first
    assert len([h for h in gw.listings() if h.status == 409]) <= 1  # at most an edit within a 1 s listing
    assert saved(tmp_path / "out") == {nb["id"] for nb in gw.notebooks}


async def test_every_listing_page_comes_before_any_download(
    big: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stand-in answers 409 to a listing page if a download happened since the listing began."""
    gw, url = big
    walk = {"started_at": 0}

    def hook(request: web.Request, g: FakeGateway) -> web.Response | None:
        if request.path == LIST:
            if "cursor" not in request.query:
                walk["started_at"] = len(g.hits)
            elif any(h.path != LIST for h in g.hits[walk["started_at"] :]):
                return error(409, "collection_changed", "observable_notebooks")
        return None

    gw.hook = hook
    code = await backup(url, tmp_path / "out", fake_time)
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "collection_changed" not in err
    assert [h.cursor for h in gw.listings()] == [None, "50", "100", "150", "200"]
    last_listing = max(i for i, h in enumerate(gw.hits) if h.path == LIST)
    assert all(h.path == LIST for h in gw.hits[: last_listing + 1])
    assert len(gw.details()) == 250


async def test_a_listing_that_keeps_changing_still_backs_up_what_it_listed(
    big: tuple[FakeGateway, str], fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The restart rule and resumability stay: downloads follow even a failed listing, nothing is marked gone."""
    gw, url = big
    out = tmp_path / "out"
    seed_gone_candidate(out)
    gw.hook = lambda request, g: (
        error(409, "collection_changed", "observable_notebooks") if request.query.get("cursor") == "100" else None
    )
    code = await backup(url, out, fake_time)
    stdout, _ = capsys.readouterr()
    assert code == 1
    assert "kept changing" in stdout
    assert len([h for h in gw.listings() if h.cursor is None]) == bn.LISTING_RESTARTS + 1
    first_detail = next(i for i, h in enumerate(gw.hits) if h.path != LIST)
    assert all(h.path != LIST for h in gw.hits[first_detail:])
    assert saved(out) >= {nb["id"] for nb in gw.notebooks[:100]}  # each fetched once, after the listing
    paths = [h.path for h in gw.details()]
    assert len(paths) == len(set(paths)) == 100
    idx = index(out)
    assert "gone_since" not in idx["notebooks"]["observable/old999"] and idx["complete"] is False
