"""Wrong changes that mutation testing showed no test noticing, each pinned by what a user sees.

Every test drives the gateway through real HTTP against a small scriptable origin (a real
aiohttp server on 127.0.0.1) and asserts on the stable answer or on what the origin received.
The survivors they kill are named in each docstring (``make mutants`` measures the rest).
"""

from __future__ import annotations

import email.utils
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from yarl import URL

from gateway.server import GATEWAY
from tests.helpers.mutants import ADMIN_KEY, TOTAL
from tests.helpers.mutants import gateway as _gateway


async def _ids(gw: TestClient[Any, Any], url: str) -> tuple[list[int], str | None]:
    resp = await gw.get(url)
    body = await resp.json()
    assert resp.status == 200, body
    return [it["id"] for it in body["items"]], body["next_cursor"]


# --------------------------------------------------------------------------- pagination


async def test_offset_walk_without_a_count_advances_by_each_page(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor: ``offset += len(items)`` → ``offset = len(items)`` (a list without a count).

    The origin caps its pages at 3: ``all=true`` follows ``next`` page after page, and a stable page
    of 7 is filled from three upstream pages; each must ask the next offset, not repeat a page.
    """
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    assert await _ids(gw, "/v1/uncounted?all=true") == (list(range(TOTAL)), None)
    offsets = [q for p, q in origin.seen if p == "/offset/uncounted"]
    # after the first, each page is asked from the item before it, which it must start with
    assert offsets == ["limit=3&offset=0", "limit=3&offset=2", "limit=3&offset=4", "limit=3&offset=6"]
    ids, cursor = await _ids(gw, "/v1/uncounted?limit=7")
    assert ids == list(range(7)) and cursor is not None
    assert await _ids(gw, f"/v1/uncounted?limit=7&cursor={cursor}") == ([7], None)
    # the counted list fetches the rest concurrently, and gets the same items once each
    assert await _ids(gw, "/v1/counted?all=true") == (list(range(TOTAL)), None)
    ids, cursor = await _ids(gw, "/v1/counted?limit=5")
    assert ids == list(range(5))
    assert await _ids(gw, f"/v1/counted?limit=5&cursor={cursor}") == ([5, 6, 7], None)


async def test_max_items_is_the_largest_collection_served(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor: ``handed > max_items`` → ``>=``: a collection of exactly max_items is served."""
    gw, _, _ = await _gateway(make_gateway, aiohttp_server)
    assert await _ids(gw, "/v1/capped-exact?all=true") == (list(range(TOTAL)), None)
    resp = await gw.get("/v1/capped-below?all=true")
    body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "collection_too_large"
    assert body["error"]["route"] == "capped_below" and "max_items" in body["error"]["message"]


async def _merged(gw: TestClient[Any, Any], url: str) -> tuple[list[tuple[int, str]], str | None]:
    resp = await gw.get(url)
    body = await resp.json()
    assert resp.status == 200, body
    return [(it["t"], it["type"]) for it in body["items"]], body["next_cursor"]


async def test_merged_streams_end_exactly_when_their_items_are_served(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor: the multi-stream end state when a buffer runs out exactly at ``limit``.

    A stream ends (leaves the cursor) only when its last page said so *and* every item of it
    was served: one with items left must be fetched again, one emptied exactly at the limit must not.
    """
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    everything = [(10, "a"), (9, "b"), (8, "a"), (7, "b"), (6, "a")]
    # limit 4: b runs out exactly at the limit (its last page said no more); a still holds 6
    page, cursor = await _merged(gw, "/v1/merged?type=a,b&limit=4")
    assert page == everything[:4] and cursor is not None
    before = len(origin.seen)
    page, cursor = await _merged(gw, f"/v1/merged?type=a,b&limit=4&cursor={cursor}")
    assert page == everything[4:] and cursor is None
    asked = [q for _, q in origin.seen[before:]]
    # b had ended: it is not asked again, but for the walk's end check (each stream's first page again)
    assert all("type=a" in q for q in asked[:-2]), asked
    assert sorted(asked[-2:]) == ["type=a", "type=b"], asked
    # limit 5: both streams run out exactly at the limit and said so: no next cursor
    assert await _merged(gw, "/v1/merged?type=a,b&limit=5") == (everything, None)
    assert await _merged(gw, "/v1/merged?type=a,b&all=true") == (everything, None)


async def test_page_numbers_stop_at_the_total(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors in ``PageNumbers.advance``: a total reached exactly ends the walk (no extra page)."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    assert await _ids(gw, "/v1/paged?all=true") == (list(range(6)), None)
    assert [q for p, q in origin.seen if p == "/pages"] == ["page=1&limit=3", "page=2&limit=3"]


async def test_next_links_from_link_headers_stay_on_the_upstream(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors in ``NextLinks``: several Link header lines, the base path kept, and a link to
    another path or another host refused (502 naming the route), never followed."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    assert await _ids(gw, "/v1/linked/ok?all=true") == (list(range(6)), None)
    asked = [q for p, q in origin.seen if p == "/base/linked/ok"]
    assert asked == ["size=2", "page=2", "page=3"]
    ids, cursor = await _ids(gw, "/v1/linked/ok?limit=2")
    assert ids == [0, 1] and cursor is not None
    assert await _ids(gw, f"/v1/linked/ok?limit=4&cursor={cursor}") == ([2, 3, 4, 5], None)
    for variant in ("offpath", "offorigin"):
        resp = await gw.get(f"/v1/linked/{variant}?all=true")
        body = await resp.json()
        assert resp.status == 502 and body["error"]["code"] == "pagination_bad_link", body
        assert body["error"]["route"] == "linked"
    assert all(p.startswith("/base/linked/") for p, _ in origin.seen)


async def test_an_empty_next_token_ends_the_walk(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor in ``Tokens.advance``: ``""`` is the end, not a token to send back."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    assert await _ids(gw, "/v1/tokened?all=true") == ([0, 1], None)
    assert [q for p, q in origin.seen if p == "/tokens"] == ["", "cursor=t1"]


# --------------------------------------------------------------------------- mapping


async def test_optional_params_after_an_absent_one_are_still_sent(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor: ``continue`` → ``break`` after the first absent optional param."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    resp = await gw.get("/v1/echo/x?second=two&flag=true")
    assert resp.status == 200, await resp.text()
    assert origin.seen[-1] == ("/echo/x", "second=two&flag=true")
    resp = await gw.get("/v1/echo/x?first=one")
    assert resp.status == 200 and origin.seen[-1] == ("/echo/x", "first=one")


async def test_boolean_false_is_forwarded_as_false(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor: ``flag=false`` (as ``reindex=false``) read as true; and a non-boolean is a 400, not sent."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    for given, sent in (("false", "false"), ("FALSE", "false"), ("0", "false"), ("true", "true"), ("1", "true")):
        resp = await gw.get(f"/v1/echo/x?flag={given}")
        assert resp.status == 200, (given, await resp.text())
        assert origin.seen[-1] == ("/echo/x", f"flag={sent}"), given
    before = len(origin.seen)
    resp = await gw.get("/v1/echo/x?flag=maybe")
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "bad_query" and "true or false" in body["error"]["message"]
    assert len(origin.seen) == before


async def test_path_params_stay_one_percent_encoded_segment(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor: path params no longer percent-encoded (``..%2F`` sent to the upstream as ``../``)."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    for name in ("a%20b", "a%3Fq%3D1", "a%23b", "%25"):
        resp = await gw.get(URL(f"/v1/echo/{name}", encoded=True))
        assert resp.status == 200, await resp.text()
        assert origin.seen[-1] == (f"/echo/{name}", ""), name
    resp = await gw.get(URL("/v1/echo/..%2Fadmin", encoded=True))
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "bad_path_param"
    assert not any("admin" in path for path, _ in origin.seen)  # refused, never forwarded


async def test_response_fields_are_cast_and_missing_ones_are_drift(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors in ``evaluate``/``_cast`` and the target path: types, optional, params, consts,
    a mixed segment (``@{name}``) and the target's trailing slash."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    resp = await gw.get("/v1/shape/ok")
    assert await resp.json() == {"n": 7, "f": 0.5, "b": True, "s": "7", "gone": None, "name": "ok", "kind": "fixed"}
    assert origin.seen[-1] == ("/shape/@ok/", "")
    resp = await gw.get("/v1/shape/zero")
    assert await resp.json() == {"n": 0, "f": 2.0, "b": False, "s": "0", "gone": None, "name": "zero", "kind": "fixed"}
    for name, says in (
        ("word", "upstream value for 'n' is not int: 'seven'"),
        ("lost", "upstream response lost field 'meta.count' (stable field 'n')"),
        ("list", "upstream returned list where an object was expected"),
    ):
        resp = await gw.get(f"/v1/shape/{name}")
        body = await resp.json()
        assert resp.status == 502 and body["error"]["code"] == "shape_drift", body
        assert says in body["error"]["message"] and body["error"]["route"] == "shape", body


async def test_typed_params_are_checked_then_sent(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors in ``_convert``: yes/no booleans, integers, enums; a bad value is a 400, never sent."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    sends = (("flag=yes", "flag=true"), ("flag=No", "flag=false"), ("n=-5", "n=-5"), ("color=red", "color=red"))
    for given, sent in sends:
        assert (await gw.get(f"/v1/echo/x?{given}")).status == 200
        assert origin.seen[-1] == ("/echo/x", sent), given
    before = len(origin.seen)
    for given, says in (
        ("n=five", "query parameter 'n' must be an integer, got 'five'"),
        ("color=green", "query parameter 'color' must be one of red, blue; got 'green'"),
    ):
        resp = await gw.get(f"/v1/echo/x?{given}")
        body = await resp.json()
        assert resp.status == 400 and body["error"]["details"] == [says], body
    assert len(origin.seen) == before


# --------------------------------------------------------------------------- cache policy


async def test_upstream_max_age_zero_is_never_served_from_the_cache(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor: ``max-age=0`` (or a negative or invalid one) cached for 1 s."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    origin.cache_control.update(
        zero=["max-age=0"], negative=["max-age=-5"], invalid=["max-age=soon"], ok=["max-age=30"]
    )
    for name in ("zero", "negative", "invalid", "ok"):
        first, second = await gw.get(f"/v1/doc/{name}"), await gw.get(f"/v1/doc/{name}")
        assert first.status == second.status == 200
        expected = "HIT" if name == "ok" else "MISS"
        assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", expected), name
        assert origin.fetches(f"/doc/{name}") == (1 if name == "ok" else 2), name


async def test_the_strictest_freshness_of_every_page_wins(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor: the strictest freshness not winning across upstream calls (``min`` → ``max``).

    An ``all=true`` answer is built from 4 upstream pages; the first may be kept 600 s, the
    others 5 s: the stable answer is fresh for 5 s, not 600.
    """
    gw, origin, clock = await _gateway(make_gateway, aiohttp_server)
    url = "/v1/fresh-pages?all=true"
    assert (await gw.get(url)).headers["X-Cache"] == "MISS"
    clock.now += 4
    assert (await gw.get(url)).headers["X-Cache"] == "HIT"
    clock.now += 2
    resp = await gw.get(url)
    assert resp.headers["X-Cache"] == "MISS"
    assert [it["id"] for it in (await resp.json())["items"]] == list(range(TOTAL))
    assert origin.fetches("/offset/fresh") == 8  # 4 pages a walk: each after the first from the item before


async def test_a_reloaded_mapping_is_never_answered_from_the_old_shape(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor: the route fingerprint no longer in the cache key, so stale shapes survive a reload."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    resp = await gw.get("/v1/doc/plain")
    assert await resp.json() == {"name": "plain"} and resp.headers["X-Cache"] == "MISS"
    assert (await gw.get("/v1/doc/plain")).headers["X-Cache"] == "HIT"
    gateway = gw.server.app[GATEWAY]
    routes = Path(gateway.runtime.config.path)
    routes.write_text(routes.read_text().replace("response: {item: {name: name}}", "response: {item: {title: name}}"))
    resp = await gw.post("/admin/reload", headers={"X-API-Key": ADMIN_KEY})
    assert resp.status == 200, await resp.text()
    resp = await gw.get("/v1/doc/plain")
    assert await resp.json() == {"title": "plain"} and resp.headers["X-Cache"] == "MISS"
    assert origin.fetches("/doc/plain") == 2


async def test_invalidates_clears_the_named_routes_entries(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor: route markers lost, so ``invalidates:`` stops clearing another route's entries."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    assert [(await gw.get(f"/v1/doc/{n}")).headers["X-Cache"] for n in ("one", "two", "one")] == ["MISS", "MISS", "HIT"]
    resp = await gw.post("/v1/touch", json={})
    assert resp.status == 204
    for name in ("one", "two"):  # every entry of the named route, whatever its path
        resp = await gw.get(f"/v1/doc/{name}")
        assert resp.headers["X-Cache"] == "MISS" and (await resp.json()) == {"name": name}
        assert (await gw.get(f"/v1/doc/{name}")).headers["X-Cache"] == "HIT"
    assert origin.fetches("/doc/one") == origin.fetches("/doc/two") == 2
    # a path too long for the memo of markers (over 256 characters) is cleared the same way
    long = "/v1/doc/" + "l" * 300
    assert [(await gw.get(long)).headers["X-Cache"] for _ in range(2)] == ["MISS", "HIT"]
    assert (await gw.post("/v1/touch", json={})).status == 204
    assert (await gw.get(long)).headers["X-Cache"] == "MISS"


async def test_upstream_cache_control_is_read_as_http_says(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors in reading the upstream's Cache-Control: the list separator, several header lines,
    quoted values, directive names in any case, and every directive that forbids a shared copy."""
    gw, origin, clock = await _gateway(make_gateway, aiohttp_server)
    never = {
        "packed": ["max-age=600,no-store"],  # no space after the comma
        "two-lines": ["max-age=600", "private"],  # one directive per header line
        "upper": ["max-age=600, No-Store"],
        "no-cache": ["no-cache"],
        "private": ["private, max-age=600"],
    }
    origin.cache_control.update(never, quoted=['max-age="5"'], spaced=["public , max-age = 5"])
    for name in never:
        states = [(await gw.get(f"/v1/doc/{name}")).headers["X-Cache"] for _ in range(2)]
        assert states == ["MISS", "MISS"], name
    for name in ("quoted", "spaced"):  # kept 5 s (the route says 60 s), not dropped as unreadable
        assert [(await gw.get(f"/v1/doc/{name}")).headers["X-Cache"] for _ in range(2)] == ["MISS", "HIT"], name
    clock.now += 4
    assert (await gw.get("/v1/doc/quoted")).headers["X-Cache"] == "HIT"
    clock.now += 2
    assert (await gw.get("/v1/doc/quoted")).headers["X-Cache"] == "MISS"


async def test_unknown_params_are_named_in_one_bounded_400(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors in ``_unknown_params``: the first 10 named (each cut at 64 characters), the rest
    counted, the route's own params listed; one unknown is singular; nothing is forwarded."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    long = "k" * 65
    names = [f"u{i}" for i in range(9)] + [long, "x1", "x2"]
    resp = await gw.get("/v1/echo/x?" + "&".join(f"{n}=1" for n in names))
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "bad_query"
    shown = ", ".join(repr(n) for n in names[:9]) + f", {'k' * 64 + '...'!r}"
    expected = f"unknown query parameters {shown} and 2 more; this route takes: color, first, flag, n, second"
    assert body["error"]["details"][0] == expected
    resp = await gw.get(f"/v1/echo/x?{'k' * 64}=1")
    assert (await resp.json())["error"]["details"][0] == (
        f"unknown query parameter {'k' * 64!r}; this route takes: color, first, flag, n, second"
    )
    names = [f"u{i}" for i in range(10)]
    resp = await gw.get("/v1/echo/x?" + "&".join(f"{n}=1" for n in names))
    assert (await resp.json())["error"]["details"][0] == (
        f"unknown query parameters {', '.join(repr(n) for n in names)}; this route takes: color, first, flag, n, second"
    )
    resp = await gw.get("/v1/doc/x?a=1&a=2")
    assert (await resp.json())["error"]["details"] == ["unknown query parameter 'a'; this route takes none"]
    resp = await gw.get("/v1/echo/x?first=1&first=2")
    assert (await resp.json())["error"]["details"] == ["query parameter 'first' is given more than once"]
    assert not origin.seen


async def test_expires_is_measured_against_the_upstreams_date(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors in ``_expires_in``: a past Expires is never kept (not even 1 s); without a Date (or an
    unreadable one) the gateway's clock is the base; with one, the upstream's own clock is."""
    gw, origin, clock = await _gateway(make_gateway, aiohttp_server)
    now = clock.now
    http_date = email.utils.formatdate
    origin.headers.update(
        past={"Expires": http_date(now - 30, usegmt=True)},
        bogus={"Expires": "0"},
        no_date={"Expires": http_date(now + 5, usegmt=True)},
        bad_date={"Expires": http_date(now + 5, usegmt=True), "Date": "yesterday-ish"},
        # the upstream's clock is an hour behind: Expires 5 s after *its* Date is 5 s, not an hour
        skewed={"Expires": http_date(now - 3600 + 5, usegmt=True), "Date": http_date(now - 3600, usegmt=True)},
    )
    for name in ("past", "bogus"):
        assert [(await gw.get(f"/v1/doc/{name}")).headers["X-Cache"] for _ in range(2)] == ["MISS", "MISS"], name
    fresh = ("no_date", "bad_date", "skewed")
    for name in fresh:
        assert [(await gw.get(f"/v1/doc/{name}")).headers["X-Cache"] for _ in range(2)] == ["MISS", "HIT"], name
    clock.now += 3
    assert [(await gw.get(f"/v1/doc/{name}")).headers["X-Cache"] for name in fresh] == ["HIT"] * 3
    clock.now += 3
    assert [(await gw.get(f"/v1/doc/{name}")).headers["X-Cache"] for name in fresh] == ["MISS"] * 3


async def test_purging_prefix_root_drops_everything(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor in ``under``: the prefix ``/`` matches every path."""
    gw, _, _ = await _gateway(make_gateway, aiohttp_server)
    urls = ["/v1/doc/one", "/v1/fresh-pages?limit=2"]
    assert [(await gw.get(u)).headers["X-Cache"] for u in urls] == ["MISS", "MISS"]
    assert [(await gw.get(u)).headers["X-Cache"] for u in urls] == ["HIT", "HIT"]
    resp = await gw.post("/admin/cache/purge?prefix=/", headers={"X-API-Key": ADMIN_KEY})
    assert resp.status == 200 and (await resp.json())["deleted"] == 2
    assert [(await gw.get(u)).headers["X-Cache"] for u in urls] == ["MISS", "MISS"]
