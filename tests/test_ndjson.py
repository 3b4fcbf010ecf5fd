"""Collections as NDJSON (``Accept: application/x-ndjson``), through the gateway, against the sandboxes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from gateway.config import parse_config
from gateway.ndjson import wants_ndjson
from gateway.pagination import Answer, Position, pages
from sandbox.runner import Sandboxes
from tests.conftest import ROUTES

PH = "/v1/posthog/projects/1/notebooks"
OBS = "/v1/observable/notebooks"
ND = {"Accept": "application/x-ndjson"}


def _parse(body: bytes) -> list[Any]:
    assert body.endswith(b"\n")
    return [json.loads(line) for line in body.decode().split("\n")[:-1]]


async def test_all_true_streams_every_item_in_the_json_order(gw: TestClient[Any, Any]) -> None:
    whole = await gw.get(PH, params={"all": "true"})
    assert whole.status == 200
    expected = (await whole.json())["items"]
    assert len(expected) == 250

    resp = await gw.get(PH, params={"all": "true"}, headers=ND)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    assert resp.headers.get("Transfer-Encoding") == "chunked"  # streamed, not sized up front
    assert resp.headers["X-Request-ID"]
    assert _parse(await resp.read()) == expected


async def test_merged_before_style_streams_too(gw: TestClient[Any, Any]) -> None:
    params = {"type": "public,shared", "all": "true"}
    expected = (await (await gw.get(OBS, params=params)).json())["items"]
    resp = await gw.get(OBS, params=params, headers=ND)
    assert resp.status == 200
    assert _parse(await resp.read()) == expected


async def test_a_page_carries_its_cursor_in_a_header(gw: TestClient[Any, Any]) -> None:
    seen: list[Any] = []
    cursor: str | None = None
    for _ in range(3):
        params = {"limit": "7", **({"cursor": cursor} if cursor else {})}
        as_json = await (await gw.get(PH, params=params)).json()
        resp = await gw.get(PH, params=params, headers=ND)
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/x-ndjson"
        items = _parse(await resp.read())
        assert items == as_json["items"] and len(items) == 7
        assert resp.headers["X-Next-Cursor"] == as_json["next_cursor"]
        cursor = resp.headers["X-Next-Cursor"]
        seen += items
    assert len({i["id"] for i in seen}) == 21
    more = await gw.get(PH, params={"limit": "200", "cursor": cursor}, headers=ND)
    assert len(_parse(await more.read())) == 200
    # the last page has no cursor header
    last = await gw.get(PH, params={"limit": "200", "cursor": more.headers["X-Next-Cursor"]}, headers=ND)
    assert len(_parse(await last.read())) == 250 - 21 - 200
    assert "X-Next-Cursor" not in last.headers


@pytest.mark.parametrize(
    ("accept", "ndjson"),
    [
        ("application/x-ndjson", True),
        ("application/ndjson", True),
        ("application/x-NDJSON", True),  # media types ignore case
        ("Application/X-Ndjson; Q=0.5, application/json;q=0.1", True),
        ("application/x-ndjson, application/json;q=0.5", True),
        ("application/json, application/x-ndjson;q=0.9", False),
        ("application/x-ndjson;q=0", False),
        ("*/*", False),
        ("application/json", False),
        ("", False),
    ],
)
def test_accept_negotiation(accept: str, ndjson: bool) -> None:
    assert wants_ndjson(accept) is ndjson


async def test_json_is_still_the_default_and_items_routes_ignore_ndjson(gw: TestClient[Any, Any]) -> None:
    resp = await gw.get(PH, params={"limit": "2"}, headers={"Accept": "application/json, application/x-ndjson;q=0.1"})
    assert resp.headers["Content-Type"].startswith("application/json")
    assert len((await resp.json())["items"]) == 2
    short_id = (await resp.json())["items"][0]["id"]
    one = await gw.get(f"{PH}/{short_id}", headers=ND)  # not a collection: its JSON document
    assert one.status == 200 and (await one.json())["id"] == short_id
    shout = await gw.get(PH, params={"limit": "2"}, headers={"Accept": "Application/X-NDJSON"})  # case ignored
    assert shout.status == 200 and shout.headers["Content-Type"].startswith("application/x-ndjson")


async def test_failure_before_the_first_byte_is_an_ordinary_error(
    gw: TestClient[Any, Any], sandboxes: Sandboxes
) -> None:
    sandboxes.posthog_state.apply_switches({"faults": {"/api/projects/1/notebooks": {"status": 500}}})
    resp = await gw.get(PH, params={"all": "true"}, headers=ND)
    assert resp.status == 502
    assert resp.headers["Content-Type"].startswith("application/json")
    err = (await resp.json())["error"]
    assert err["code"] == "upstream_failed" and err["route"] == "posthog_notebooks"
    bad = await gw.get(PH, params={"all": "maybe"}, headers=ND)
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "bad_query"


async def test_failure_midway_ends_with_an_error_line_and_an_incomplete_body(
    gw: TestClient[Any, Any], sandboxes: Sandboxes
) -> None:
    state = sandboxes.posthog_state
    state.apply_switches({"latency_ms": 300})  # pages 2 and 3 are still upstream when page 1 arrives
    resp = await gw.get(PH, params={"all": "true"}, headers=ND)
    assert resp.status == 200  # sent with the first page; it cannot change any more
    first = json.loads(await resp.content.readline())
    state.apply_switches({"faults": {"/api/projects/1/notebooks": {"status": 500}}})
    lines = [first]
    with pytest.raises(aiohttp.ClientPayloadError):
        while line := await resp.content.readline():
            lines.append(json.loads(line))
    items, last = lines[:-1], lines[-1]
    assert len(items) == 100 and all("error" not in i for i in items)  # page one, whole
    assert last["error"]["code"] == "upstream_failed"
    assert last["error"]["route"] == "posthog_notebooks"
    # the gateway still serves (the connection it closed was only that one)
    state.reset_switches()
    again = await gw.get(PH, params={"limit": "1"})
    assert again.status == 200


async def test_fetching_runs_at_most_two_windows_ahead_of_a_stalled_reader() -> None:
    """The memory bound behind flat NDJSON: a reader that stops stops the fetching too."""
    cfg = parse_config(ROUTES.read_text(), str(ROUTES), env={})
    route = next(r for r in cfg.routes if r.name == "posthog_notebooks")
    asked: list[int] = []

    async def fetch(stream: str | None, extra: list[tuple[str, str]], at: str | None) -> Answer:
        offset, limit = int(dict(extra)["offset"]), int(dict(extra)["limit"])
        asked.append(offset)
        await asyncio.sleep(0)
        n = max(0, min(limit, 10_000 - offset))
        return Answer(
            {
                "count": 10_000,
                "next": "more" if offset + n < 10_000 else None,
                "results": [{"o": o} for o in range(offset, offset + n)],
            }
        )

    it = pages(route, [None], Position(), None, fetch, 3)
    await anext(it)  # page one, and the reader stalls here
    await anext(it)
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(asked) <= 2 + 2 * 3  # two pages handed out, at most 2 x concurrency fetched ahead
    assert len(asked) >= 4  # but it does fetch ahead, concurrently
    rest = [p async for p in it]
    # each page after the first asked from the item before it (gateway.pagination.offset)
    # each page after the first asked from the item before it, 99 new items a page (gateway.pagination.offset)
    assert len(rest) == 99 and sorted(asked) == [0, *range(99, 9_901, 99)]
