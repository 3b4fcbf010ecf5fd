"""Items that share the paging field (``before`` style: Observable's ``update_time``) through next_cursor.

``before`` is strict, so a cursor that resumed at the last value handed out lost the tied items
the upstream page still held: walking 75 notebooks saved in threes with limit=1 returned 25, and the
backup script called that complete.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sandbox.observable_data import PAGE_SIZE
from sandbox.runner import Sandboxes
from tests.helpers.walk import get_json, walk

PUBLIC = "/v1/observable/notebooks?type=public"


def _tie(sandboxes: Sandboxes, size: int, *, kind: str = "public") -> list[str]:
    """Notebooks of ``kind`` saved ``size`` at a time (never across the upstream's page boundary); their ids."""
    notebooks = sandboxes.observable_state.by_kind(kind)
    assert PAGE_SIZE % size == 0, "a run of ties crossing the upstream's own page cannot be reached by `before`"
    for start in range(0, len(notebooks) - size + 1, size):
        for nb in notebooks[start + 1 : start + size]:
            nb.update_ms = notebooks[start].update_ms
    return [nb.id for nb in sandboxes.observable_state.by_kind(kind)]


@pytest.mark.parametrize("limit", [1, 2, 4, 7, 50])
async def test_a_cursor_walk_over_tied_items_loses_and_repeats_none(
    gw: TestClient[Any, Any], sandboxes: Sandboxes, limit: int
) -> None:
    ids = _tie(sandboxes, 3)
    everything = await get_json(gw, f"{PUBLIC}&all=true")
    assert [i["id"] for i in everything["items"]] == ids
    walked = await walk(gw, PUBLIC, limit)
    assert [i["id"] for i in walked] == ids


async def test_merged_types_with_ties_in_both_walk_like_all_true(
    gw: TestClient[Any, Any], sandboxes: Sandboxes
) -> None:
    _tie(sandboxes, 3)
    _tie(sandboxes, 2, kind="shared")
    url = "/v1/observable/notebooks?type=public,shared"
    everything = await get_json(gw, f"{url}&all=true")
    assert len(everything["items"]) == 75 + 40
    for limit in (1, 5):
        assert await walk(gw, url, limit, most=200) == everything["items"]


async def test_a_cursor_inside_a_tie_asks_the_page_again_and_skips_what_it_served(
    gw: TestClient[Any, Any], sandboxes: Sandboxes
) -> None:
    ids = _tie(sandboxes, 3)
    state = sandboxes.observable_state
    first = await get_json(gw, f"{PUBLIC}&limit=1")
    assert [i["id"] for i in first["items"]] == ids[:1]
    before = state.count("GET", "/user/documents")
    second = await get_json(gw, f"{PUBLIC}&limit=1&cursor={first['next_cursor']}")
    assert [i["id"] for i in second["items"]] == ids[1:2]
    assert state.count("GET", "/user/documents") == before + 1  # one upstream page, not a walk from the start
    # a notebook liked meanwhile is still known as served: ties are told apart by id, not by content
    state.notebooks[ids[0]].likes += 1
    third = await get_json(gw, f"{PUBLIC}&limit=2&cursor={second['next_cursor']}")
    assert [i["id"] for i in third["items"]] == ids[2:4]


LONG_RUN = """
upstreams:
  origin:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
routes:
  tied:
    stable: GET /v1/tied
    upstream: origin
    auth: none
    pagination: {style: before, param: before, field: t, items: items, max_limit: 200}
    targets: ["GET /tied"]
"""


async def test_a_run_of_ties_too_long_for_a_cursor_is_a_502_not_a_loss(make_gateway: Any, aiohttp_server: Any) -> None:
    """300 items share one value (one upstream page of 302): a cursor can carry 100 of them; past that the
    next page is a 502 naming the limit, never a short or repeated list."""
    items = [{"id": 0, "t": 9}, *({"id": i, "t": 5} for i in range(1, 301)), {"id": 301, "t": 1}]

    async def page(request: web.Request) -> web.Response:
        before = int(request.query.get("before", "1000"))
        return web.json_response({"items": [it for it in items if it["t"] < before]})

    app = web.Application()
    app.router.add_get("/tied", page)
    server: TestServer = await aiohttp_server(app)
    gw = await make_gateway(LONG_RUN, env={"ORIGIN_URL": str(server.make_url(""))})
    everything = await get_json(gw, "/v1/tied?all=true")  # no cursor, no bound
    assert [it["id"] for it in everything["items"]] == list(range(302))
    # cursors that carry up to 100 tied ids resume exactly
    part = await get_json(gw, "/v1/tied?limit=61")
    rest = await get_json(gw, f"/v1/tied?limit=40&cursor={part['next_cursor']}")
    assert [it["id"] for it in part["items"] + rest["items"]] == list(range(101))
    # one more tied item would need a 101st: a 502 naming why, not a cursor that fails later as the client's
    body = await get_json(gw, f"/v1/tied?limit=1&cursor={rest['next_cursor']}", status=502)
    assert body["error"]["code"] == "pagination_ties"
    assert "more than 100 items share one paging value" in body["error"]["message"]
    body = await get_json(gw, "/v1/tied?limit=200", status=502)
    assert body["error"]["code"] == "pagination_ties"
    # the data, not the route breaking: counted, but the route stays up (no alert pages for it)
    metrics = await (await gw.get("/metrics")).text()
    assert 'gateway_route_up{route="tied"} 1.0' in metrics
    assert 'gateway_upstream_errors_total{kind="ties",route="tied",upstream="origin"} 2.0' in metrics


def _origin(items: list[dict[str, int]], size: int) -> web.Application:
    """``before`` over ``items`` as Observable pages: newest first, strictly before, ``size`` a page."""

    async def page(request: web.Request) -> web.Response:
        b = request.query.get("before")
        chosen = sorted((i for i in items if b is None or i["t"] < int(b)), key=lambda i: (-i["t"], i["id"]))
        return web.json_response({"items": chosen[:size]})

    app = web.Application()
    app.router.add_get("/tied", page)
    return app


async def _tied_gateway(make_gateway: Any, aiohttp_server: Any, items: list[dict[str, int]], size: int) -> Any:
    server: TestServer = await aiohttp_server(_origin(items, size))
    return await make_gateway(LONG_RUN, env={"ORIGIN_URL": str(server.make_url(""))})


async def test_a_cursor_walk_reaches_every_item_all_true_does(make_gateway: Any, aiohttp_server: Any) -> None:
    """Found by review: the page asked again from a cursor ended elsewhere than a normal page, and a later
    run of ties cut at that end lost its rest.  Now a cursor resumes a run from above it, so every
    walk reaches at least what all=true does, in order, with no item twice."""
    data = {8: [7, 11], 7: [1, 15], 6: [9], 5: [2, 6, 8, 16], 4: [0, 3, 10, 12, 13], 1: [4, 5, 14, 17, 18]}
    items = [{"id": i, "t": t} for t, ids in data.items() for i in ids]
    gw = await _tied_gateway(make_gateway, aiohttp_server, items, 6)
    everything = [i["id"] for i in (await get_json(gw, "/v1/tied?all=true"))["items"]]
    for limit in range(1, 8):
        walked = [i["id"] for i in await walk(gw, "/v1/tied", limit)]
        assert len(walked) == len(set(walked)), limit
        assert set(everything) <= set(walked), (limit, set(everything) - set(walked))
        assert sorted(walked) == sorted(i["id"] for i in items), "runs shorter than a page are reached whole"


async def test_random_runs_of_ties_are_walked_whole(make_gateway: Any, aiohttp_server: Any) -> None:
    """Runs shorter than the upstream's page, split by its page boundaries or not: all=true and a cursor walk of
    any limit return every item once, newest first."""
    import random

    rng = random.Random(15)
    for _ in range(25):
        size = rng.randint(3, 7)
        items, next_id = [], 0
        for t in range(40, 0, -1):
            for _ in range(rng.choice([0, 1, 1, 2, size - 1])):
                items.append({"id": next_id, "t": t})
                next_id += 1
        gw = await _tied_gateway(make_gateway, aiohttp_server, items, size)
        everything = (await get_json(gw, "/v1/tied?all=true"))["items"]
        assert sorted(i["id"] for i in everything) == list(range(next_id)), size
        limit = rng.randint(1, 8)
        walked = await walk(gw, "/v1/tied", limit, most=400)
        assert sorted(i["id"] for i in walked) == list(range(next_id)), (size, limit)
        assert [i["t"] for i in walked] == sorted((i["t"] for i in walked), reverse=True)


async def test_a_run_on_the_first_page_survives_notebooks_saved_meanwhile(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """Found by review: the cursor asked the first page again, which newer items had pushed the rest of the
    run off; now the walk reads on until it reaches the run.  The newer items are a later walk's: the walk's
    end sees the list moved (its head is not the one it began with) and answers 409, never a 200 without them."""
    items = [{"id": 1, "t": 5}, {"id": 2, "t": 5}, {"id": 3, "t": 4}, {"id": 4, "t": 3}]
    gw = await _tied_gateway(make_gateway, aiohttp_server, items, 3)
    first = await get_json(gw, "/v1/tied?limit=1")
    items += [{"id": 8, "t": 9}, {"id": 9, "t": 8}, {"id": 10, "t": 7}]
    rest = await get_json(gw, f"/v1/tied?limit=2&cursor={first['next_cursor']}")
    assert [i["id"] for i in first["items"] + rest["items"]] == [1, 2, 3]
    end = await get_json(gw, f"/v1/tied?limit=10&cursor={rest['next_cursor']}", status=409)
    assert end["error"]["code"] == "collection_changed"


async def test_a_cursor_carries_a_run_only_where_it_may_go_on(make_gateway: Any, aiohttp_server: Any) -> None:
    """The run's form (asked again from above, ids skipped) only where the next item shares the value or the
    page ended; elsewhere the plain value, and the next request asks strictly before it."""
    items = [{"id": i, "t": 10 - i} for i in range(6)]
    gw = await _tied_gateway(make_gateway, aiohttp_server, items, 4)
    mid = await get_json(gw, "/v1/tied?limit=2")
    end = await get_json(gw, "/v1/tied?limit=4")
    assert _position(mid["next_cursor"]) == 9  # the next item (t 8) is another value: plain
    assert _position(end["next_cursor"]) == {"p": 8, "v": 7, "s": [_position_id(3)]}  # the page ended: may go on


def _position(cursor: str) -> Any:
    import base64
    import json

    body = cursor.partition(".")[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["p"][""]


def _position_id(item_id: int) -> str:
    from gateway.pagination.before import TIE_ID_CHARS
    from gateway.pagination.common import fingerprint

    return fingerprint(item_id)[:TIE_ID_CHARS]
