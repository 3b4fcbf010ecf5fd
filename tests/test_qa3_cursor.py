"""QA defect 5: a cursor made stale by an operator's reload is not the client's mistake.

The runbook's second example (PostHog's list changes its pagination, routes.yaml follows, the gateway
reloads) left every walk in progress holding an ``offset`` cursor the ``cursor``-style route refused
with 400 ``bad_cursor``: the backup stopped after its first page.  Such a cursor (genuine, issued for
this walk, before the reload changed how the route pages) is now a 409 ``route_changed``, answered
before any upstream call and counted against neither the upstream nor the route; a forged, truncated,
other route's or other project's cursor is still a 400 ``bad_cursor``.  Driven through real HTTP: the
gateway, its ``POST /admin/reload``, the sandboxes, and the backup script as a subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import Route, parse_config
from gateway.errors import GatewayError
from gateway.pagination.common import Position
from gateway.pagination.cursor import _sign, binding, decode_cursor, encode_cursor
from gateway.pagination.stale import MESSAGE, fingerprint
from gateway.server import GATEWAY, build_app
from sandbox.posthog import PostHogState
from sandbox.runner import Sandboxes, gateway_env, start_sandboxes
from tests.conftest import ROOT, ROUTES
from tests.helpers.backup import ADMIN_KEY, BACKUP_KEY, KEYS_YAML, Stack
from tests.helpers.backup_fake import LIST, FakeGateway, FakeTime, backup, error, notebooks

PH = "/v1/posthog/projects/1/notebooks"
OBS = "/v1/observable/notebooks"
UPSTREAM_LIST = "/api/projects/1/notebooks/"
ADMIN_YAML = "\nadmin:\n  keys:\n    ops: {key: {env: ROUTEGATE_ADMIN_KEY}}\n"
RUNBOOK_SECOND = (ROOT / "docs" / "runbook.md").read_text().split("## Second example", 1)[1]
CHANGED = {"error": {"code": "route_changed", "message": MESSAGE, "route": "posthog_notebooks"}}
BAD = "the cursor is not valid for this route; pass next_cursor exactly as it was returned"


def runbook_sed(routes: Path) -> None:
    """The runbook's second `sed` (offset → cursor style), run on ``routes`` as the page says."""
    found = re.findall(r"\(`(sed -i [^`]+)`\s+makes exactly that edit", RUNBOOK_SECOND)
    assert len(found) == 1, found
    subprocess.run(["bash", "-c", found[0].replace("/tmp/routes.yaml", str(routes))], check=True, timeout=30)


async def _gateway(make_gateway: Any, sandbox_env: dict[str, str]) -> tuple[TestClient[Any, Any], Path]:
    gw: TestClient[Any, Any] = await make_gateway(
        ROUTES.read_text() + ADMIN_YAML, env={**sandbox_env, "ROUTEGATE_ADMIN_KEY": ADMIN_KEY}
    )
    return gw, Path(gw.app[GATEWAY].runtime.config.path)


async def _reload(gw: TestClient[Any, Any]) -> None:
    resp = await gw.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert resp.status == 200, await resp.text()


async def _answer(gw: TestClient[Any, Any], path: str, **params: str) -> tuple[int, Any]:
    resp = await gw.get(path, params=params)
    return resp.status, await resp.json()


async def _bad_cursor(gw: TestClient[Any, Any], path: str, cursor: str) -> None:
    status, body = await _answer(gw, path, cursor=cursor)
    assert (status, body["error"]["code"], body["error"]["message"]) == (400, "bad_cursor", BAD), body


def _route_counts(text: str, route: str) -> dict[str, float]:
    """Every upstream-error count and the health gauge of ``route`` in one scrape."""
    wanted = (
        "gateway_upstream_errors_total",
        "gateway_upstream_requests_total",
        "gateway_route_up",
        "gateway_route_failure_info",
    )
    return {
        s.name + "|" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name in wanted and s.labels.get("route") == route
    }


async def test_the_runbook_s_pagination_fix_makes_a_cursor_in_progress_a_409_route_changed(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw, routes = await _gateway(make_gateway, sandbox_env)
    status, first = await _answer(gw, PH, limit="5")
    assert status == 200 and first["next_cursor"], first
    before = first["next_cursor"]
    _, obs = await _answer(gw, OBS, limit="3")
    assert obs["next_cursor"]

    sandboxes.posthog_state.apply_switches({"list_paging": "cursor"})  # the upstream changes
    runbook_sed(routes)
    await _reload(gw)
    route = next(r for r in gw.app[GATEWAY].runtime.config.routes if r.name == "posthog_notebooks")
    assert route.pagination is not None and route.pagination.style == "cursor"
    assert (await gw.get(PH, params={"limit": "1"})).status == 200  # the route works on its new paging
    sandboxes.posthog_state.reset_counters()
    counted = _route_counts(await (await gw.get("/metrics")).text(), "posthog_notebooks")
    assert counted["gateway_route_up|route=posthog_notebooks"] == 1, counted
    assert any(k.startswith("gateway_upstream_requests_total|") and v for k, v in counted.items()), counted

    # the client passed the cursor exactly as returned: a 409 that says to start again, nothing sent upstream
    for params in ({}, {"limit": "7"}, {"all": "true"}):
        status, body = await _answer(gw, PH, cursor=before, **params)
        assert (status, body) == (409, CHANGED), params
    resp = await gw.get(PH, params={"cursor": before, "all": "true"}, headers={"Accept": "application/x-ndjson"})
    assert resp.status == 409 and (await resp.json()) == CHANGED
    assert sandboxes.posthog_state.total_requests == 0
    # not the upstream's failure, nor the route's
    assert _route_counts(await (await gw.get("/metrics")).text(), "posthog_notebooks") == counted

    # a cursor the client altered, cut short, took from another route or another project: still its mistake
    body64, _, sig = before.partition(".")
    await _bad_cursor(gw, PH, body64[:-2] + ("AA" if body64[-2:] != "AA" else "BB") + "." + sig)
    await _bad_cursor(gw, PH, body64 + "." + sig[:-1])
    await _bad_cursor(gw, PH, before[: len(before) // 2])
    await _bad_cursor(gw, PH, obs["next_cursor"])
    await _bad_cursor(gw, "/v1/posthog/projects/2/notebooks", before)
    assert sandboxes.posthog_state.total_requests == 0

    # following the 409's advice works: a new walk from the first page, on the new paging
    status, again = await _answer(gw, PH, limit="5")
    assert status == 200 and again["next_cursor"], again
    status, rest = await _answer(gw, PH, limit="5", cursor=again["next_cursor"])
    assert status == 200 and rest["items"], rest
    assert not {i["id"] for i in again["items"]} & {i["id"] for i in rest["items"]}
    assert [i["id"] for i in again["items"] + rest["items"]] == [i["id"] for i in first["items"]] + [
        i["id"] for i in (await _answer(gw, PH, limit="10"))[1]["items"][5:]
    ]
    # and the new cursor is still bound to its project
    await _bad_cursor(gw, "/v1/posthog/projects/2/notebooks", again["next_cursor"])


async def test_a_reload_changing_the_target_path_is_a_409_and_one_changing_nothing_of_paging_is_not(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw, routes = await _gateway(make_gateway, sandbox_env)
    _, first = await _answer(gw, PH, limit="5")
    cursor = first["next_cursor"]
    text = routes.read_text()

    # edits a position does not depend on (description, limits, cache): the walk goes on
    unrelated = text.replace("A project's notebooks, most recently modified first", "Notebooks, newest first").replace(
        "      page_size: 100\n", "      page_size: 100\n      max_limit: 150\n      default_limit: 20\n", 1
    )
    unrelated = unrelated.replace("cache: {ttl: 30s, stale_if_error: 1h}  # also", "cache: {ttl: 60s}  # also", 1)
    assert unrelated.count("max_limit: 150") == 1 and unrelated != text
    routes.write_text(unrelated)
    await _reload(gw)
    status, body = await _answer(gw, PH, limit="5", cursor=cursor)
    assert status == 200 and body["items"], body
    assert body["items"][0]["id"] not in {i["id"] for i in first["items"]}

    # the target's path changes (an upstream move): the positions of the old one mean nothing there
    old_target = "      - GET /api/projects/{project_id}/notebooks/\n"
    moved = unrelated.replace(old_target, old_target.replace("/projects/", "/environments/"))
    assert moved != unrelated
    routes.write_text(moved)
    await _reload(gw)
    sandboxes.posthog_state.reset_counters()
    for stale in (cursor, body["next_cursor"]):
        status, got = await _answer(gw, PH, cursor=stale)
        assert (status, got) == (409, CHANGED)
    assert sandboxes.posthog_state.total_requests == 0
    # the original file back: a cursor issued under it resumes again (the fingerprint is the route's text,
    # not the reload's count)
    routes.write_text(unrelated)
    await _reload(gw)
    status, body = await _answer(gw, PH, limit="5", cursor=cursor)
    assert status == 200 and body["items"], body


# --------------------------------------------------------------------------- the backup restarts its listing


async def test_the_backup_reads_a_listing_again_after_a_409_route_changed(
    fake_time: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the stand-in gateway: the cursor page answers 409 route_changed once."""
    monkeypatch.delenv("ROUTEGATE_API_KEY", raising=False)
    monkeypatch.delenv("POSTHOG_PROJECT_ID", raising=False)
    gw = FakeGateway(fake_time, notebooks(60))
    answered = {"n": 0}

    def hook(request: web.Request, g: FakeGateway) -> web.Response | None:
        if request.path == LIST and "cursor" in request.query and not answered["n"]:
            answered["n"] += 1
            return error(409, "route_changed", "observable_notebooks")
        return None

    gw.hook = hook
    server = TestServer(gw.app(), host="127.0.0.1")
    await server.start_server()
    try:
        code = await backup(str(server.make_url("")).rstrip("/"), tmp_path / "out", fake_time)
    finally:
        await server.close()
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "409 route_changed" in err and "from the first page" in err
    assert [h.cursor for h in gw.listings()] == [None, "50", None, "50"]
    paths = [h.path for h in gw.details()]
    assert len(paths) == len(set(paths)) == len(gw.notebooks)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def ph_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """The real gateway (on a socket, a copy of the shipped routes.yaml) and sandboxes, with enough
    PostHog notebooks that the backup's listing spans three pages of 50."""
    ph = PostHogState(notebook_count=120, other_project_notebook_count=3, deleted_count=2)
    sandboxes = await start_sandboxes(posthog_state=ph)
    env = gateway_env(sandboxes) | {"BACKUP_KEY": BACKUP_KEY, "ROUTEGATE_ADMIN_KEY": ADMIN_KEY}
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.read_text() + KEYS_YAML)
    app = build_app(routes, registry=CollectorRegistry(), env=env)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Stack(sandboxes, f"http://127.0.0.1:{runner.addresses[0][1]}", routes, app, tmp_path / "backup")
    finally:
        await runner.cleanup()
        await sandboxes.close()


async def _until(cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _resumed_listings(ph: PostHogState) -> int:
    """Upstream list requests past the first page (the gateway's offset walk asks from one item before)."""
    return sum(
        1
        for entry in ph.log
        if entry["path"] == UPSTREAM_LIST and int(parse_qs(entry["query_string"]).get("offset", ["0"])[0]) > 0
    )


async def test_the_qa_reproduction_a_running_backup_survives_the_runbook_s_pagination_fix(ph_stack: Stack) -> None:
    """QA's steps: the backup is reading the PostHog listing; the upstream switches to cursor paging
    while the second page is asked (502 shape_drift, retried); the runbook's sed and a reload; the
    retried page's cursor predates the reload: 409 route_changed, the listing is read again on the new
    paging, and the run completes (it used to exit 1 after 50 notebooks with 400 bad_cursor)."""
    stack = ph_stack
    stack.ph.apply_switches({"latency_ms": 300})
    proc = await stack.start("--observable-types", "", "--posthog-project", "1")
    await _until(lambda: _resumed_listings(stack.ph) >= 1, "the second page to be asked upstream")
    stack.ph.apply_switches({"list_paging": "cursor", "latency_ms": 5})  # while that page waits its latency
    await _until(lambda: _resumed_listings(stack.ph) >= 1 and stack.ph.count("GET", UPSTREAM_LIST) >= 3, "a retry")
    assert proc.returncode is None

    runbook_sed(stack.routes)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.url}/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as resp,
    ):
        resp_status, resp_text = resp.status, await resp.text()
    assert resp_status == 200, resp_text

    _, err_bytes = await asyncio.wait_for(proc.communicate(), 90)
    err = err_bytes.decode()
    assert proc.returncode == 0, err[-3000:]
    assert "shape_drift" in err and "409 route_changed" in err and "from the first page" in err, err[-3000:]
    assert "bad_cursor" not in err
    visible = {nb.short_id for nb in stack.ph.visible(1)}
    assert len(visible) == 120
    assert {p.stem for p in (stack.out / "posthog").rglob("*.json")} == visible


# --------------------------------------------------------------------------- the order of the checks

ONE = """
version: 1
upstreams:
  u: {base_url: "http://127.0.0.1:9"}
routes:
  r:
    description: Items of a project.
    stable: GET /v1/p/{pid}/items
    upstream: u
    auth: none
    pagination: {style: page, page_size: 100}
    targets: ["GET /items/{pid}"]
"""
SECRET = b"s" * 32


def _route(text: str = ONE) -> Route:
    return parse_config(text, "routes.yaml", {}).routes[0]


def _signed_payload(payload: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"{body}.{_sign(SECRET, body)}"


def _code(route: Route, cursor: str, params: dict[str, Any], secret: bytes = SECRET) -> tuple[int, str]:
    try:
        decode_cursor(route, cursor, secret, params)
    except GatewayError as exc:
        return exc.status, exc.code
    return 200, "ok"


def test_the_path_values_are_checked_before_the_fingerprint_and_the_rest_after() -> None:
    route = _route()
    cursor = encode_cursor(route, [None], Position({"": {"t": 3, "s": 0}}, marks={"l": "0" * 12}), SECRET, {"pid": "1"})
    assert cursor is not None
    assert _code(route, cursor, {"pid": "1"}) == (200, "ok")
    # what a page position depends on: the upstream page size (page 3 of 50 is not page 3 of 100), the style
    for edit in (
        ("page_size: 100", "page_size: 50"),
        ("style: page,", "style: offset,"),
        ("GET /items", "GET /v2/items"),
    ):
        edited = _route(ONE.replace(*edit))
        assert _code(edited, cursor, {"pid": "1"}) == (409, "route_changed"), edit
        # ... but another project's walk, or another key's cursor, is the client's mistake whatever was reloaded
        assert _code(edited, cursor, {"pid": "2"}) == (400, "bad_cursor"), edit
        assert _code(edited, cursor, {"pid": "1"}, b"t" * 32) == (400, "bad_cursor"), edit
    # what it does not depend on: the description, the limits
    limits = ("page_size: 100", "page_size: 100, max_limit: 150, default_limit: 20")
    for edit in (("Items of a project.", "Items."), limits):
        assert _code(_route(ONE.replace(*edit)), cursor, {"pid": "1"}) == (200, "ok"), edit
    # an offset position does not depend on the upstream page size either
    offset = _route(ONE.replace("style: page,", "style: offset,"))
    at = encode_cursor(offset, [None], Position({"": 40}, marks={"l": "0" * 12}), SECRET, {"pid": "1"})
    assert at is not None
    assert _code(
        _route(ONE.replace("style: page, page_size: 100", "style: offset, page_size: 30")), at, {"pid": "1"}
    ) == (
        200,
        "ok",
    )
    # a fingerprint that is not one (the key leaked): refused as any malformed field
    payload = json.loads(base64.urlsafe_b64decode(cursor.partition(".")[0] + "=="))
    assert _code(route, _signed_payload({**payload, "g": "not-hex"}), {"pid": "1"}) == (400, "bad_cursor")
    assert _code(route, _signed_payload({**payload, "g": 7}), {"pid": "1"}) == (400, "bad_cursor")
    # a cursor from before fingerprints (no "g", the binding in its old form) is checked strictly as before
    legacy = {k: v for k, v in payload.items() if k != "g"} | {"a": binding(route, {"pid": "1"}, 0)}
    assert _code(route, _signed_payload(legacy), {"pid": "1"}) == (200, "ok")
    assert _code(_route(ONE.replace("style: page,", "style: offset,")), _signed_payload(legacy), {"pid": "1"}) == (
        400,
        "bad_cursor",
    )


def test_the_route_fingerprint_stays_what_this_version_computes() -> None:
    """Every cursor carries it: a version computing it otherwise answers every walk in progress across
    the upgrade with 409 route_changed.  A known answer, computed by the code of this commit."""
    assert fingerprint(_route()) == KNOWN_ROUTE_FINGERPRINT


KNOWN_ROUTE_FINGERPRINT = "ee0bb7ce352532c9"
