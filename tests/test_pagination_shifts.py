"""A list that moves under a paged walk is never served as a 200 with a missing or repeated item.

PostHog's notebook list is ordered by ``-last_modified_at`` (an edit moves a notebook to the top,
a deletion moves the rest up) and paged by offset; its activity is paged by page number, newest
first.  The walks run through the gateway over real HTTP, against an origin on 127.0.0.1 that
keeps such a list and changes it between (or during) the gateway's requests, and against the
PostHog sandbox.  Each walk either completes with every item that existed throughout exactly
once, or is a 409 ``collection_changed``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from gateway.pagination.shifts import MAX_RESTARTS, MESSAGE
from gateway.server import GATEWAY
from sandbox.runner import Sandboxes
from tests.helpers.cache import Clock
from tests.helpers.shifts import ROUTES, Origin


async def _setup(
    make_gateway: Any, aiohttp_server: Any, size: int, feed: int = 0
) -> tuple[TestClient[Any, Any], Origin, CollectorRegistry]:
    origin = Origin(size, feed)
    server: TestServer = await aiohttp_server(origin.app())
    registry = CollectorRegistry()
    gw = await make_gateway(ROUTES, env={"ORIGIN_URL": str(server.make_url(""))}, registry=registry)
    return gw, origin, registry


async def _get(gw: TestClient[Any, Any], url: str) -> tuple[int, dict[str, Any]]:
    resp = await gw.get(url, headers={"Cache-Control": "no-cache"})
    return resp.status, await resp.json()


def _key(item: dict[str, Any]) -> Any:
    return item.get("id", item.get("created_at"))


async def _walk(
    gw: TestClient[Any, Any], path: str, limit: int, between: Callable[[int], None] | None = None
) -> tuple[list[Any], dict[str, Any] | None]:
    """Page through ``path`` by ``next_cursor`` (``between(n)`` after the n-th page): the items served,
    and the error that stopped the walk (None when it completed)."""
    status, body = await _get(gw, f"{path}?limit={limit}")
    assert status == 200, body
    served = [_key(it) for it in body["items"]]
    assert len(body["items"]) <= limit
    n = 1
    while body["next_cursor"]:
        if between is not None:
            between(n)
        status, body = await _get(gw, f"{path}?limit={limit}&cursor={body['next_cursor']}")
        if status != 200:
            return served, body["error"]
        assert len(body["items"]) <= limit
        served += [_key(it) for it in body["items"]]
        n += 1
    return served, None


def _shifted(error: dict[str, Any] | None, route: str = "listed") -> bool:
    return error == {"code": "collection_changed", "message": MESSAGE, "route": route}


def _errors(registry: CollectorRegistry, route: str, kind: str) -> float:
    return (
        registry.get_sample_value("gateway_upstream_errors_total", {"upstream": "origin", "route": route, "kind": kind})
        or 0.0
    )


# --------------------------------------------------------------------------- offset: between cursor pages


async def test_an_edit_between_cursor_pages_is_a_409_counted_without_marking_the_route_down(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """The QA walk: ``?limit=4``, a notebook on a later page edited (it moves to the top), then the
    next cursor: a 409 naming the route, not a page missing one notebook and repeating another."""
    gw, origin, registry = await _setup(make_gateway, aiohttp_server, 12)
    victim = origin.ids()[9]
    served, error = await _walk(gw, "/v1/listed", 4, lambda n: origin.edit(victim) if n == 1 else None)
    assert _shifted(error), error
    assert served == origin.ids()[1:5]  # page one, before the edit: nothing after it was served
    assert _errors(registry, "listed", "shifted") == 1
    assert registry.get_sample_value("gateway_route_up", {"route": "listed"}) == 1  # not the route breaking
    # the page after page one was asked from its last item (offset 3, one more than the limit)
    assert origin.asked[-2:] == [("list", 3, 5), ("list", 8, 5)]  # then the probe: no upstream ignoring offset
    # starting again from the first page walks the changed list exactly
    assert await _walk(gw, "/v1/listed", 4) == (origin.ids(), None)


async def test_a_deletion_on_a_served_page_is_a_409(make_gateway: Any, aiohttp_server: Any) -> None:
    """Deleting an item already served moves every later one up: the next page would skip one."""
    gw, origin, _ = await _setup(make_gateway, aiohttp_server, 12)
    victim = origin.ids()[1]
    served, error = await _walk(gw, "/v1/listed", 4, lambda n: origin.delete(victim) if n == 1 else None)
    assert _shifted(error) and served == [*origin.ids()[:1], victim, *origin.ids()[1:3]]


async def test_changes_that_move_nothing_unserved_are_walked_through(make_gateway: Any, aiohttp_server: Any) -> None:
    """Editing an item served before the last one, or deleting one not yet served, moves nothing the
    next page relies on: the walk goes on, each item once."""
    gw, origin, _ = await _setup(make_gateway, aiohttp_server, 12)
    before = origin.ids()
    served, error = await _walk(gw, "/v1/listed", 4, lambda n: origin.edit(before[2]) if n == 1 else None)
    assert error is None and sorted(served) == sorted(before) and len(served) == len(set(served))
    assert served == before
    now = origin.ids()
    gone = now[9]
    served, error = await _walk(gw, "/v1/listed", 4, lambda n: origin.delete(gone) if n == 2 else None)
    assert error is None and served == [i for i in now if i != gone]


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_an_edit_on_every_page_boundary(make_gateway: Any, aiohttp_server: Any, limit: int) -> None:
    """A list of 7; after every page of every walk, each item in turn edited (moved to the top): the
    walk completes with each item exactly once, or answers 409 — never a 200 with a hole or a repeat."""
    gw, origin, _ = await _setup(make_gateway, aiohttp_server, 7)
    outcomes = {"complete": 0, "409": 0}
    pages = -(-7 // limit)
    for boundary in range(1, pages):
        for victim_at in range(7):
            victim = origin.ids()[victim_at]

            def change(n: int, b: int = boundary, v: str = victim) -> None:
                if n == b:
                    origin.edit(v)

            expected = sorted(origin.ids())
            served, error = await _walk(gw, "/v1/listed", limit, change)
            if error is None:
                assert sorted(served) == expected, (boundary, victim_at, served)
                outcomes["complete"] += 1
            else:
                assert _shifted(error), error
                assert len(served) == len(set(served)), served
                outcomes["409"] += 1
    assert outcomes["complete"] and outcomes["409"]  # both happen: an edit at or above the boundary is harmless


async def test_a_stale_cached_page_does_not_stand_in_for_a_moved_list(make_gateway: Any, aiohttp_server: Any) -> None:
    """``stale_if_error`` serves an old copy when the upstream fails; a list that moved is no failure
    an old page can cover (it was read from another list than the client's next one): 409."""
    gw, origin, _ = await _setup(make_gateway, aiohttp_server, 12)
    clock = Clock()
    gw.server.app[GATEWAY].caches.clock = clock
    first = await (await gw.get("/v1/listed-cached?limit=4")).json()
    cursor = first["next_cursor"]
    second = await gw.get(f"/v1/listed-cached?limit=4&cursor={cursor}")
    assert second.status == 200 and second.headers["X-Cache"] == "MISS"
    clock.now += 31  # past the ttl, well within stale_if_error
    origin.edit(origin.ids()[9])
    again = await gw.get(f"/v1/listed-cached?limit=4&cursor={cursor}")
    assert again.status == 409 and _shifted((await again.json())["error"], "listed_cached")


async def test_a_moved_list_drops_its_own_route_s_cached_pages_and_no_other_s(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """The purge on a 409 names the route: a list moving under one walk must not empty the cache of
    every other route (each would then go to its upstream again)."""
    origin = Origin(12)
    server: TestServer = await aiohttp_server(origin.app())
    block = ROUTES.split("  listed_cached:\n")[1].split("\n  listed_raw:")[0]
    other = "  other_cached:\n" + block.replace("/v1/listed-cached", "/v1/other-cached") + "\n"
    routes = ROUTES.replace("  listed_raw:", other + "  listed_raw:", 1)
    gw = await make_gateway(routes, env={"ORIGIN_URL": str(server.make_url(""))}, registry=CollectorRegistry())
    assert (await gw.get("/v1/other-cached?limit=4")).headers["X-Cache"] == "MISS"
    assert (await gw.get("/v1/other-cached?limit=4")).headers["X-Cache"] == "HIT"
    first = await (await gw.get("/v1/listed-cached?limit=4")).json()
    origin.edit(origin.ids()[9])
    moved = await gw.get(f"/v1/listed-cached?limit=4&cursor={first['next_cursor']}")
    assert moved.status == 409
    assert (await gw.get("/v1/listed-cached?limit=4")).headers["X-Cache"] == "MISS"  # its own: dropped
    assert (await gw.get("/v1/other-cached?limit=4")).headers["X-Cache"] == "HIT"  # another route's: kept


async def test_a_head_of_all_true_on_an_empty_collection_is_a_200(make_gateway: Any, aiohttp_server: Any) -> None:
    gw, _origin, _ = await _setup(make_gateway, aiohttp_server, 0)
    resp = await gw.head("/v1/listed?all=true")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json")


# --------------------------------------------------------------------------- offset: all=true and NDJSON


async def test_all_true_starts_again_when_the_list_moves_during_the_walk(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """An edit between the upstream pages of one ``all=true`` request: the walk starts again by
    itself and answers every item exactly once."""
    gw, origin, registry = await _setup(make_gateway, aiohttp_server, 23)
    victim = origin.ids()[20]
    origin.before_answer = lambda n: origin.edit(victim) if n == 3 else None
    status, body = await _get(gw, "/v1/listed?all=true")
    assert status == 200, body
    assert [it["id"] for it in body["items"]] == origin.ids()
    assert [a for a in origin.asked if a[1] == 0] == [("list", 0, 5), ("list", 0, 5)]  # started again once
    assert _errors(registry, "listed", "shifted") == 0  # answered in full: nothing failed
    # the operator still sees the walk read its pages again
    assert registry.get_sample_value("gateway_collection_restarts_total", {"route": "listed"}) == 1


async def test_all_true_gives_up_after_three_restarts(make_gateway: Any, aiohttp_server: Any) -> None:
    gw, origin, registry = await _setup(make_gateway, aiohttp_server, 23)
    origin.before_answer = lambda n: origin.insert(f"new{n}") if n % 2 == 0 else None  # a list that never rests
    status, body = await _get(gw, "/v1/listed?all=true")
    assert status == 409 and _shifted(body["error"]), body
    assert len([a for a in origin.asked if a[1] == 0]) == MAX_RESTARTS + 1
    assert _errors(registry, "listed", "shifted") == 1
    assert registry.get_sample_value("gateway_route_up", {"route": "listed"}) != 0  # never marked down
    assert registry.get_sample_value("gateway_collection_restarts_total", {"route": "listed"}) == MAX_RESTARTS


async def test_all_true_from_a_cursor_does_not_start_again(make_gateway: Any, aiohttp_server: Any) -> None:
    """The rest of a walk from a cursor cannot start from the first page (the client holds it): 409."""
    gw, origin, registry = await _setup(make_gateway, aiohttp_server, 12)
    status, body = await _get(gw, "/v1/listed?limit=4")
    origin.edit(origin.ids()[8])
    status, body = await _get(gw, f"/v1/listed?all=true&cursor={body['next_cursor']}")
    assert status == 409 and _shifted(body["error"]), body
    assert not registry.get_sample_value("gateway_collection_restarts_total", {"route": "listed"})


async def test_an_ndjson_stream_under_way_ends_with_the_error_line(make_gateway: Any, aiohttp_server: Any) -> None:
    """Lines already sent cannot be unsent, so a stream does not start again: the last line is the
    409's error and the body is visibly incomplete; no item is sent twice."""
    gw, origin, _ = await _setup(make_gateway, aiohttp_server, 23)
    victim = origin.ids()[20]
    origin.before_answer = lambda n: origin.edit(victim) if n == 2 else None
    resp = await gw.get("/v1/listed?all=true", headers={"Accept": "application/x-ndjson"})
    assert resp.status == 200
    lines: list[Any] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        while line := await resp.content.readline():
            lines.append(json.loads(line))
    items, last = lines[:-1], lines[-1]
    assert _shifted(last["error"]), last
    ids = [it["id"] for it in items]
    assert ids and len(ids) == len(set(ids))


# --------------------------------------------------------------------------- offset: randomized


async def test_a_list_changing_during_walks_never_yields_a_hole_or_a_repeat(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """Randomized (seeded): cursor walks with one change (edit, delete or insert) between some pages,
    and ``all=true`` walks with one change during a random upstream request.  Each walk serves every
    item that existed throughout exactly once, or is a 409 (cursor walks only)."""
    rng = random.Random(20261206)
    gw, origin, _ = await _setup(make_gateway, aiohttp_server, 0)
    seen = {"complete": 0, "409": 0}
    for rnd in range(150):
        origin.items = []
        for i in range(rng.randint(1, 30)):
            origin.insert(f"r{rnd}-{i}")
        origin.cap = rng.choice([None, None, 3, 7])
        start = set(origin.ids())

        def change(_: Any = None, r: int = rnd) -> None:
            ids = origin.ids()
            kind = rng.choice(["edit", "edit", "delete", "insert"])
            if kind == "insert" or not ids:
                origin.insert(f"x{r}-{origin.clock}")
            else:
                victim = rng.choice(ids)
                if kind == "delete":
                    origin.delete(victim)
                else:
                    origin.edit(victim)

        if rng.random() < 0.5:
            limit = rng.randint(1, 8)
            served, error = await _walk(gw, "/v1/listed", limit, lambda n: change() if rng.random() < 0.4 else None)
        else:
            at = rng.randint(1, 8)
            origin.before_answer = lambda n, a=at: change() if n == a else None
            origin.asked = []
            status, body = await _get(gw, "/v1/listed?all=true")
            origin.before_answer = None
            assert status == 200, body  # one change: the walk started again at most once
            served, error = [it["id"] for it in body["items"]], None
        assert len(served) == len(set(served)), served
        if error is None:
            lasting = start & set(origin.ids())  # edited ones too: they existed throughout
            assert lasting <= set(served), sorted(lasting - set(served))
            seen["complete"] += 1
        else:
            assert _shifted(error), error
            seen["409"] += 1
    assert seen["complete"] > 10 and seen["409"] > 3, seen


# --------------------------------------------------------------------------- an upstream ignoring its page size


async def test_a_page_never_holds_more_than_limit_and_its_cursor_loses_nothing(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """A stand-in answering 2 items (and a next link) whatever the limit: ``?limit=1`` serves 1 and
    ``?limit=3`` serves 3, and following the cursors serves every item once."""
    gw, origin, _ = await _setup(make_gateway, aiohttp_server, 9)
    origin.ignore_limit = 2
    for limit in (1, 2, 3, 4):
        served, error = await _walk(gw, "/v1/listed", limit)  # _walk checks each page against the limit
        assert (served, error) == (origin.ids(), None), limit
    status, body = await _get(gw, "/v1/listed?limit=1")
    assert status == 200 and len(body["items"]) == 1
    status, body = await _get(gw, "/v1/listed?limit=3")
    assert status == 200 and [it["id"] for it in body["items"]] == origin.ids()[:3]
    status, body = await _get(gw, "/v1/listed?all=true")
    assert status == 200 and [it["id"] for it in body["items"]] == origin.ids()


# --------------------------------------------------------------------------- a page contradicting its count


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (
            {"count": 250, "next": None, "previous": None, "results": []},
            "its first page is empty though its count is 250",
        ),
        (
            {"count": 250, "next": None, "previous": None, "results": [{"id": "a"}, {"id": "b"}]},
            "it has no next page after 2 items though its count is 250",
        ),
    ],
)
async def test_a_page_contradicting_its_count_is_shape_drift(
    make_gateway: Any, aiohttp_server: Any, raw: dict[str, Any], why: str
) -> None:
    gw, origin, _ = await _setup(make_gateway, aiohttp_server, 0)
    origin.raw = raw
    for url in ("/v1/listed-raw", "/v1/listed-raw?all=true"):
        status, body = await _get(gw, url)
        assert status == 502 and body["error"] == {
            "code": "shape_drift",
            "message": f"upstream page contradicts itself: {why}",
            "route": "listed_raw",
        }, body


async def test_a_count_that_fits_its_page_is_served(make_gateway: Any, aiohttp_server: Any) -> None:
    """Not clever where it is not certain: an empty list says count 0; a count larger than the items
    with a next link is only more to come."""
    gw, origin, _ = await _setup(make_gateway, aiohttp_server, 0)
    origin.raw = {"count": 0, "next": None, "previous": None, "results": []}
    assert await _get(gw, "/v1/listed-raw") == (200, {"items": [], "next_cursor": None})
    origin.raw = {"count": 3, "next": None, "previous": None, "results": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}
    status, body = await _get(gw, "/v1/listed-raw?limit=3")
    assert status == 200 and body["next_cursor"] is None


# --------------------------------------------------------------------------- page numbers


async def test_a_feed_entry_added_between_cursor_pages_is_a_409_not_a_repeat(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """The QA walk of the activity feed: 12 entries, ``?limit=3`` (upstream pages of 3), an entry
    added before the second page; mid-page and at a page's end alike."""
    for limit in (2, 3):
        gw, origin, registry = await _setup(make_gateway, aiohttp_server, 0, feed=12)
        served, error = await _walk(
            gw, "/v1/feed", limit, lambda n, o=origin: o.events.append(o._event()) if n == 1 else None
        )
        assert _shifted(error, "feed"), (limit, error)
        assert len(served) == limit
        assert _errors(registry, "feed", "shifted") == 1
        # untouched, the walk is whole (a cursor at a page's end asks that page again)
        served, error = await _walk(gw, "/v1/feed", limit)
        assert error is None and served == [e["created_at"] for e in reversed(origin.events)], limit


async def test_a_feed_entry_added_during_an_all_true_walk_starts_it_again(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    gw, origin, _ = await _setup(make_gateway, aiohttp_server, 0, feed=12)
    origin.before_answer = lambda n: origin.events.append(origin._event()) if n == 2 else None
    status, body = await _get(gw, "/v1/feed?all=true")
    assert status == 200, body
    assert [it["created_at"] for it in body["items"]] == [e["created_at"] for e in reversed(origin.events)]
    assert [a for a in origin.asked if a[1] == 1] == [("feed", 1, 3), ("feed", 1, 3)]


async def test_a_feed_entry_removed_between_cursor_pages_is_a_409(make_gateway: Any, aiohttp_server: Any) -> None:
    """Where the walk resumes it asks the page again: an entry gone before it moves the rest up."""
    for limit in (2, 3):
        gw, origin, _ = await _setup(make_gateway, aiohttp_server, 0, feed=12)
        _, error = await _walk(gw, "/v1/feed", limit, lambda n, o=origin: o.events.pop() if n == 1 else None)
        assert _shifted(error, "feed"), (limit, error)


# --------------------------------------------------------------------------- the PostHog sandbox


async def test_a_feed_changing_between_cursor_pages_never_yields_a_hole_or_a_repeat(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """Randomized (seeded), page numbers: one change (an entry added, removed, or moved to the top)
    between some cursor pages; each walk serves every entry that lasted exactly once, or is a 409."""
    rng = random.Random(6122026)
    gw, origin, _ = await _setup(make_gateway, aiohttp_server, 0)
    seen = {"complete": 0, "409": 0}
    for _ in range(80):
        origin.events = [origin._event() for _ in range(rng.randint(1, 16))]
        start = {e["created_at"] for e in origin.events}

        def change(n: int) -> None:
            if rng.random() >= 0.4:
                return
            kind = rng.choice(["add", "remove", "move"])
            if kind == "add" or not origin.events:
                origin.events.append(origin._event())
                return
            victim = origin.events.pop(rng.randrange(len(origin.events)))
            if kind == "move":
                origin.events.append(victim)  # newest again, as an edit makes a notebook

        served, error = await _walk(gw, "/v1/feed", rng.randint(1, 7), change)
        assert len(served) == len(set(served)), served
        if error is None:
            lasting = start & {e["created_at"] for e in origin.events}
            assert lasting <= set(served), sorted(lasting - set(served))
            seen["complete"] += 1
        else:
            assert _shifted(error, "feed"), error
            seen["409"] += 1
    assert seen["complete"] > 10 and seen["409"] > 3, seen


def test_a_cursor_carries_the_last_item_s_identity_and_nothing_else_in_its_place() -> None:
    """The ``l`` mark is a 12-hex identity (gateway.pagination.common.identity); any other is a 400."""
    from gateway.config import parse_config
    from gateway.errors import BadRequest
    from gateway.pagination.common import Position, identity
    from gateway.pagination.cursor import decode_cursor, derive_key, encode_cursor

    cfg = parse_config(ROUTES.replace("${ORIGIN_URL}", "http://127.0.0.1:9"), "routes.yaml", env={})
    route = next(r for r in cfg.routes if r.name == "listed")
    key = derive_key("k", [])
    good = Position({"": 4}, marks={"l": identity({"id": "n003"})})
    _, back = decode_cursor(route, encode_cursor(route, [None], good, key, {}) or "", key, {})
    assert back.marks == {"l": identity({"id": "n003"})} and back.pos == {"": 4}
    for wrong in ("f" * 16, "F" * 12, "z" * 12, ""):
        cursor = encode_cursor(route, [None], Position({"": 4}, marks={"l": wrong}), key, {})
        with pytest.raises(BadRequest):
            decode_cursor(route, cursor or "", key, {})


async def test_the_qa_walks_on_the_posthog_sandbox(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    """``/tmp/qa_offset.py`` and ``/tmp/qa_page.py`` through the gateway: a notebook edited (PATCH
    through the gateway) during a ``?limit=4`` walk, an activity entry added during a ``?limit=3``
    one: both 409, and the walks started again are exact."""
    base = "/v1/posthog/projects/1/notebooks"
    state = sandboxes.posthog_state
    before = [nb.short_id for nb in state.visible(1)]
    victim = before[10]

    def patch(n: int) -> None:
        if n == 1:
            nb = state.get(1, victim)
            assert nb is not None
            state.update(nb, {"title": "edited during walk"})

    served, error = await _walk(gw, base, 4, patch)
    assert _shifted(error, "posthog_notebooks"), error
    resp = await gw.patch(f"{base}/{before[3]}", json={"title": "edited through the gateway"})
    assert resp.status == 200
    status, body = await _get(gw, f"{base}?all=true")
    assert status == 200 and [it["id"] for it in body["items"]] == [nb.short_id for nb in state.visible(1)]

    short = before[0]
    for i in range(12):
        assert (await gw.patch(f"{base}/{short}", json={"title": f"t{i}"})).status == 200
    feed = f"{base}/{short}/activity"

    def add(n: int) -> None:
        if n == 1:
            nb = state.get(1, short)
            assert nb is not None
            state.update(nb, {"title": "during walk"})

    served, error = await _walk(gw, feed, 3, add)
    assert _shifted(error, "posthog_notebook_activity"), error
    nb = state.get(1, short)
    assert nb is not None and len(nb.activity) >= 14
    status, body = await _get(gw, f"{feed}?all=true")
    assert status == 200 and len(body["items"]) == len(nb.activity)
    served, error = await _walk(gw, feed, 3)
    assert error is None and len(served) == len(set(served)) == len(nb.activity)
