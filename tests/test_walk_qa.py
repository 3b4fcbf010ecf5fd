"""The second QA pass on paging, driven through real HTTP: a cursor issued before the walk checks
(no ``l`` mark) is refused, never walked unchecked; a walk that finds its list moved drops the
route's cached pages, so starting again gets a fresh first page; and a walk for one caller alone
(``Cache-Control: no-store``/``no-cache``) stops when that caller leaves, while a shared cache
fill goes on for the callers waiting on it."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from gateway import logs
from gateway.pagination.shifts import OUTDATED
from tests.fake_upstream import Reply, start_fake
from tests.helpers.cursors import _payload, _secret, _signed
from tests.helpers.serving import _access, _no_internal_error, _served
from tests.helpers.shifts import ROUTES, Origin

Lines = tuple[logs.AccessLines, io.StringIO]


async def _setup(
    make_gateway: Any, aiohttp_server: Any, size: int, feed: int = 0
) -> tuple[TestClient[Any, Any], Origin]:
    origin = Origin(size, feed)
    server: TestServer = await aiohttp_server(origin.app())
    gw = await make_gateway(ROUTES, env={"ORIGIN_URL": str(server.make_url(""))}, registry=CollectorRegistry())
    return gw, origin


def _old_form(gw: TestClient[Any, Any], cursor: str) -> str:
    """The cursor as a gateway from before the ``l`` mark issued it: the same position, marks f/h only."""
    payload = _payload(cursor)
    assert "l" in payload["m"], payload
    payload["m"] = {k: v for k, v in payload["m"].items() if k != "l"}
    return _signed(_secret(gw), payload)


def _outdated(body: dict[str, Any], route: str) -> bool:
    return body == {"error": {"code": "cursor_outdated", "message": OUTDATED, "route": route}}


def _ids(body: dict[str, Any]) -> list[Any]:
    return [it.get("id", it.get("created_at")) for it in body["items"]]


async def _rest(gw: TestClient[Any, Any], path: str, limit: int, body: dict[str, Any]) -> list[Any]:
    """Every item from ``body`` on, following its ``next_cursor`` to the end (each page a 200)."""
    got = _ids(body)
    while body["next_cursor"]:
        resp = await gw.get(path, params={"limit": str(limit), "cursor": body["next_cursor"]})
        body = await resp.json()
        assert resp.status == 200, body
        got += _ids(body)
    return got


# --------------------------------------------------------------------------- 1. cursors from before the checks


async def test_an_old_offset_cursor_is_refused_and_a_new_one_resumes(make_gateway: Any, aiohttp_server: Any) -> None:
    """The QA reproduction: an old-form cursor, then an edit upstream, would answer a 200 page that
    repeats one notebook and loses another.  It is a 409 ``cursor_outdated`` before any upstream
    call, not counted as the upstream failing; the same position with its mark still resumes."""
    gw, origin = await _setup(make_gateway, aiohttp_server, 12)
    first = await (await gw.get("/v1/listed?limit=4")).json()
    new, old = first["next_cursor"], _old_form(gw, first["next_cursor"])
    origin.edit(origin.ids()[9])  # a later notebook edited: it moves to the top
    asked = len(origin.asked)
    for cursor, query in ((old, {"limit": "4"}), (old, {"all": "true"})):
        resp = await gw.get("/v1/listed", params={**query, "cursor": cursor})
        assert resp.status == 409 and _outdated(await resp.json(), "listed")
    assert len(origin.asked) == asked  # refused before any upstream call
    # the new cursor notices the edit (a 409 collection_changed), and, with nothing edited, resumes exactly
    assert (await gw.get("/v1/listed", params={"limit": "4", "cursor": new})).status == 409
    first = await (await gw.get("/v1/listed?limit=4")).json()
    resumed = await gw.get("/v1/listed", params={"limit": "4", "cursor": first["next_cursor"]})
    assert resumed.status == 200
    assert _ids(first) + _ids(await resumed.json()) == origin.ids()[:8]


async def test_an_old_page_cursor_is_refused_mid_page_and_at_a_page_s_end(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """``page`` (the activity feed): a cursor inside an upstream page and one that moved on to the next
    page, both without the mark, are refused; their new forms resume and the walk is exact."""
    gw, origin = await _setup(make_gateway, aiohttp_server, 0, feed=10)
    everything = [e["created_at"] for e in reversed(origin.events)]
    for limit in (2, 3):  # stops inside upstream page 1 (its "s" 2), or at its end
        first = await (await gw.get("/v1/feed", params={"limit": str(limit)})).json()
        asked = len(origin.asked)
        old = _old_form(gw, first["next_cursor"])
        resp = await gw.get("/v1/feed", params={"limit": str(limit), "cursor": old})
        assert resp.status == 409 and _outdated(await resp.json(), "feed")
        assert len(origin.asked) == asked
        assert await _rest(gw, "/v1/feed", limit, first) == everything
    # a cursor that an old gateway left pointing at the start of the next upstream page
    first = await (await gw.get("/v1/feed", params={"limit": "3"})).json()
    payload = _payload(first["next_cursor"])
    payload["p"] = {"": {"t": 2, "s": 0}}
    payload["m"] = {k: v for k, v in payload["m"].items() if k != "l"}
    resp = await gw.get("/v1/feed", params={"limit": "3", "cursor": _signed(_secret(gw), payload)})
    assert resp.status == 409 and _outdated(await resp.json(), "feed")


# --------------------------------------------------------------------------- 2. a moved list drops cached pages


async def test_after_a_409_the_first_page_again_is_fresh_and_the_walk_completes(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    gw, origin = await _setup(make_gateway, aiohttp_server, 12)
    path = "/v1/listed-cached"
    first = await gw.get(path, params={"limit": "4"})
    assert first.headers["X-Cache"] == "MISS"
    assert (await gw.get(path, params={"limit": "4"})).headers["X-Cache"] == "HIT"  # cached
    cursor = (await first.json())["next_cursor"]
    origin.edit(origin.ids()[9])
    moved = await gw.get(path, params={"limit": "4", "cursor": cursor})
    assert moved.status == 409 and (await moved.json())["error"]["code"] == "collection_changed"
    again = await gw.get(path, params={"limit": "4"})
    assert again.status == 200 and again.headers["X-Cache"] == "MISS"  # not the cached page and its dead cursor
    assert await _rest(gw, path, 4, await again.json()) == origin.ids()


async def test_all_true_s_final_409_drops_the_cached_pages_too(make_gateway: Any, aiohttp_server: Any) -> None:
    gw, origin = await _setup(make_gateway, aiohttp_server, 23)
    path = "/v1/listed-cached"
    assert (await gw.get(path, params={"limit": "4"})).headers["X-Cache"] == "MISS"
    origin.before_answer = lambda n: origin.insert(f"new{n}") if n % 2 == 0 else None  # never rests
    resp = await gw.get(path, params={"all": "true"})
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "collection_changed"
    origin.before_answer = None
    again = await gw.get(path, params={"limit": "4"})
    assert again.headers["X-Cache"] == "MISS"
    assert await _rest(gw, path, 4, await again.json()) == origin.ids()


async def test_an_all_true_restart_reads_no_cached_page(make_gateway: Any, aiohttp_server: Any) -> None:
    """The first page of the list is cached; an edit during ``all=true`` restarts it, and the restart
    asks the upstream from offset 0 again (the answer is exact), and the cached page is gone."""
    gw, origin = await _setup(make_gateway, aiohttp_server, 23)
    path = "/v1/listed-cached"
    assert (await gw.get(path, params={"limit": "5"})).headers["X-Cache"] == "MISS"
    victim = origin.ids()[20]
    start = len(origin.asked)
    origin.before_answer = lambda n: origin.edit(victim) if n == start + 3 else None
    resp = await gw.get(path, params={"all": "true"})
    body = await resp.json()
    assert resp.status == 200, body
    assert [it["id"] for it in body["items"]] == origin.ids()
    assert [a for a in origin.asked[start:] if a[1] == 0] == [("list", 0, 5), ("list", 0, 5)]
    assert (await gw.get(path, params={"limit": "5"})).headers["X-Cache"] == "MISS"


async def test_an_old_cursor_drops_the_cached_pages(make_gateway: Any, aiohttp_server: Any) -> None:
    """Cached pages may hold cursors from before the upgrade (a shared Redis cache outlives it)."""
    gw, _ = await _setup(make_gateway, aiohttp_server, 12)
    path = "/v1/listed-cached"
    first = await gw.get(path, params={"limit": "4"})
    old = _old_form(gw, (await first.json())["next_cursor"])
    assert (await gw.get(path, params={"limit": "4"})).headers["X-Cache"] == "HIT"
    resp = await gw.get(path, params={"limit": "4", "cursor": old})
    assert resp.status == 409 and _outdated(await resp.json(), "listed_cached")
    assert (await gw.get(path, params={"limit": "4"})).headers["X-Cache"] == "MISS"


# --------------------------------------------------------------------------- 3. a client leaving a cached route's walk

CACHED = """
upstreams:
  origin:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
routes:
  listed:
    stable: GET /v1/listed
    upstream: origin
    auth: none
    pagination: {style: cursor, token: next, items: results}
    targets: ["GET /listed"]
    cache: {ttl: 30s}
"""
PAGES = 8


def _page(n: int) -> Reply:
    body = {"results": [{"id": f"{n}-{i}"} for i in range(3)], "next": f"t{n + 1}" if n + 1 < PAGES else None}
    return Reply(body=json.dumps(body).encode(), delay=0.3)


async def _leave(host: str, port: int, rid: str, extra: str = "", after: float = 0.45) -> None:
    """GET all=true over a real socket, then hang up once page 1 is in and page 2 is on its way."""
    _, writer = await asyncio.open_connection(host, port)
    head = f"GET /v1/listed?all=true HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: {rid}\r\n{extra}\r\n"
    writer.write(head.encode())
    await writer.drain()
    await asyncio.sleep(after)
    writer.transport.abort()


async def _fake(aiohttp_server: Any) -> tuple[Any, str]:
    fake, _, base = await start_fake(aiohttp_server)
    fake.script("/listed", *(_page(n) for n in range(PAGES)))
    return fake, base


async def _settled(fake: Any) -> int:
    """The upstream calls made, once no more come."""
    calls = -1
    while calls != fake.count("/listed"):
        calls = fake.count("/listed")
        await asyncio.sleep(0.7)
    return int(calls)


async def test_a_client_leaving_a_no_store_or_no_cache_walk_is_a_499_and_the_walk_stops(
    aiohttp_server: Any, access_lines: Lines, tmp_path: Path
) -> None:
    """Both fills serve this caller alone: the walk is watched as if the route did not cache."""
    _, stream = access_lines
    for directive in ("no-store", "no-cache"):
        fake, base = await _fake(aiohttp_server)
        async with _served(CACHED, {"ORIGIN_URL": base}, tmp_path) as (host, port, _):
            rid = f"gone-{directive}"
            await _leave(host, port, rid, f"Cache-Control: {directive}\r\n")
            line = await _access(stream, rid)
            assert line["status"] == 499 and line["error"] == "client_closed", line
            calls = await _settled(fake)
            assert calls <= 4, calls  # the page in flight when it left, one more on a slow machine
    _no_internal_error(stream)


async def test_a_client_leaving_a_plain_request_on_a_caching_route_leaves_a_stored_answer(
    aiohttp_server: Any, access_lines: Lines, tmp_path: Path
) -> None:
    """A plain request's fill may be shared (a later request for the same answer joins it), so its walk
    goes on when its client leaves: never a 500, and the answer it gathered is stored (the next
    request is a HIT, with no upstream call)."""
    _, stream = access_lines
    fake, base = await _fake(aiohttp_server)
    async with _served(CACHED, {"ORIGIN_URL": base}, tmp_path) as (host, port, _):
        await _leave(host, port, "plain-gone")
        line = await _access(stream, "plain-gone")
        assert line["status"] in (200, 499), line  # the caller left; its fill ran to the end
        assert await _settled(fake) == PAGES
        url = f"http://{host}:{port}/v1/listed?all=true"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            body = await resp.json()
            assert resp.status == 200 and resp.headers["X-Cache"] == "HIT", body
            assert len(body["items"]) == 3 * PAGES
        assert fake.count("/listed") == PAGES
    _no_internal_error(stream)


async def test_a_coalesced_fill_goes_on_for_the_caller_still_waiting(
    aiohttp_server: Any, access_lines: Lines, tmp_path: Path
) -> None:
    """Two callers share one fill; the one that started it leaves: the other gets the whole answer
    from the one walk (no second walk, no 500)."""
    _, stream = access_lines
    fake, base = await _fake(aiohttp_server)
    async with _served(CACHED, {"ORIGIN_URL": base}, tmp_path) as (host, port, _):
        async with aiohttp.ClientSession() as session:

            async def stay() -> tuple[int, dict[str, Any], str]:
                await asyncio.sleep(0.1)  # joins the fill the first caller started
                headers = {"X-Request-ID": "stays"}
                async with session.get(f"http://{host}:{port}/v1/listed?all=true", headers=headers) as resp:
                    return resp.status, await resp.json(), resp.headers.get("X-Cache", "")

            staying = asyncio.ensure_future(stay())
            await _leave(host, port, "leaves")
            status, body, state = await asyncio.wait_for(staying, 15)
        assert status == 200 and len(body["items"]) == 3 * PAGES, body
        assert [it["id"] for it in body["items"]] == [f"{n}-{i}" for n in range(PAGES) for i in range(3)]
        assert state == "MISS"
        assert fake.count("/listed") == PAGES  # one walk, shared
        line = await _access(stream, "leaves")
        assert line["status"] != 500, line
    _no_internal_error(stream)
