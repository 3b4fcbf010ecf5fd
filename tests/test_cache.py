"""The in-process response cache, through real HTTP against the sandboxes (and a tiny origin)."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from gateway.config import ConfigError, parse_config
from gateway.server import GATEWAY
from sandbox.runner import Sandboxes
from tests.conftest import ROUTES
from tests.helpers.cache import ALICE, BOB, CLIENTS, KEYS, LIST, OPS, POSTHOG, Clock, _gw


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_repeat_read_is_a_hit_until_ttl(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    registry = CollectorRegistry()
    gw, clock = await _gw(make_gateway, sandbox_env, registry=registry)
    state = sandboxes.posthog_state
    first = await gw.get(f"{LIST}?limit=5")
    body = await first.json()
    assert first.status == 200 and first.headers["X-Cache"] == "MISS" and first.headers["Age"] == "0"
    clock.now += 7
    second = await gw.get(f"{LIST}?limit=5")
    assert second.headers["X-Cache"] == "HIT" and second.headers["Age"] == "7"
    assert await second.json() == body
    assert second.headers["Content-Type"].startswith("application/json")
    assert state.count("GET", "/api/projects/1/notebooks/") == 1
    # parameter order is irrelevant; a different value is a different entry
    assert (await gw.get(f"{LIST}?limit=6&all=false")).headers["X-Cache"] == "MISS"
    assert (await gw.get(f"{LIST}?all=false&limit=6")).headers["X-Cache"] == "HIT"
    clock.now += 60  # past the 60s ttl
    third = await gw.get(f"{LIST}?limit=5")
    assert third.headers["X-Cache"] == "MISS"
    assert state.count("GET", "/api/projects/1/notebooks/") == 3
    assert _sample(registry, "gateway_cache_requests_total", route="ph_list", result="hit") == 2
    assert _sample(registry, "gateway_cache_requests_total", route="ph_list", result="miss") == 3
    assert _sample(registry, "gateway_cache_entries") == 2
    # HEAD is answered from GET's entry, without a body
    head = await gw.head(f"{LIST}?limit=5")
    assert head.status == 200 and head.headers["X-Cache"] == "HIT" and await head.read() == b""
    # a route without cache: says nothing about caching and always asks the upstream
    short_id = state.visible(1)[0].short_id
    for _ in range(2):
        raw = await gw.get(f"/v1/raw/projects/1/notebooks/{short_id}")
        assert raw.status == 200 and "X-Cache" not in raw.headers and "Age" not in raw.headers
    assert state.count("GET", f"/api/projects/1/notebooks/{short_id}/") == 2


async def test_errors_are_never_stored(make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes) -> None:
    gw, _ = await _gw(make_gateway, sandbox_env)
    for _ in range(2):
        resp = await gw.get("/v1/posthog/projects/1/notebooks/NoSuchId")
        assert resp.status == 404 and (await resp.json())["error"]["route"] == "ph_nb"
    assert sandboxes.posthog_state.count("GET", "/api/projects/1/notebooks/NoSuchId/") == 2
    for _ in range(2):  # a bad query is refused before the cache is even asked
        resp = await gw.get(f"{LIST}?limit=nope")
        assert resp.status == 400 and "X-Cache" not in resp.headers


async def test_one_clients_cached_data_is_never_served_to_another(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw, _ = await _gw(make_gateway, sandbox_env, CLIENTS)
    state = sandboxes.posthog_state
    url = f"{LIST}?limit=3"
    assert (await gw.get(url, headers=ALICE)).headers["X-Cache"] == "MISS"
    assert (await gw.get(url, headers=ALICE)).headers["X-Cache"] == "HIT"
    bob = await gw.get(url, headers=BOB)
    assert bob.status == 200 and bob.headers["X-Cache"] == "MISS"  # bob's own upstream fetch
    assert state.count("GET", "/api/projects/1/notebooks/") == 2
    assert (await gw.get(url, headers=BOB)).headers["X-Cache"] == "HIT"
    # no key, or a wrong one, gets nothing - not even a cached copy
    for headers in ({}, {"X-API-Key": "ck_guess"}):
        resp = await gw.get(url, headers=headers)
        assert resp.status == 401 and "X-Cache" not in resp.headers
    # a rotated upstream credential is a new identity: nothing cached under the old one is reused
    env = gw.server.app[GATEWAY].env
    first_key = env["POSTHOG_API_KEY"]
    state.api_keys.add("phx_second_key_for_rotation_000000")
    env["POSTHOG_API_KEY"] = "phx_second_key_for_rotation_000000"  # read live, like a renewed secret
    assert (await gw.get(url, headers=ALICE)).headers["X-Cache"] == "MISS"
    assert (await gw.get(url, headers=ALICE)).headers["X-Cache"] == "HIT"
    env["POSTHOG_API_KEY"] = first_key
    assert (await gw.get(url, headers=ALICE)).headers["X-Cache"] == "HIT"  # the first key's own entry
    assert state.count("GET", "/api/projects/1/notebooks/") == 3
    metrics = await (await gw.get("/metrics")).text()
    for secret in [*KEYS.values(), "phx_second_key_for_rotation", "phx_sandbox_personal"]:
        assert secret not in metrics


async def test_vary_headers_split_the_entry(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw, _ = await _gw(make_gateway, sandbox_env)
    url = f"/v1/posthog/projects/1/notebooks/{sandboxes.posthog_state.visible(1)[0].short_id}"
    en, de = {"Accept-Language": "en"}, {"Accept-Language": "de"}
    assert (await gw.get(url, headers=en)).headers["X-Cache"] == "MISS"
    assert (await gw.get(url, headers=de)).headers["X-Cache"] == "MISS"
    assert (await gw.get(url, headers=en)).headers["X-Cache"] == "HIT"
    assert (await gw.get(url, headers=de)).headers["X-Cache"] == "HIT"


async def test_client_no_cache_and_no_store(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw, clock = await _gw(make_gateway, sandbox_env)
    state = sandboxes.posthog_state
    nb = state.visible(1)[0]
    url = f"/v1/posthog/projects/1/notebooks/{nb.short_id}"
    # no-store: straight through, and nothing is kept
    resp = await gw.get(url, headers={"Cache-Control": "no-store"})
    assert resp.status == 200 and resp.headers["X-Cache"] == "BYPASS" and resp.headers["Age"] == "0"
    assert (await gw.get(url)).headers["X-Cache"] == "MISS"
    assert (await gw.get(url)).headers["X-Cache"] == "HIT"
    # a change made behind the gateway's back: no-cache fetches it and refreshes the entry
    state.update(nb, {"title": "Changed upstream"})
    clock.now += 5
    assert (await (await gw.get(url)).json())["title"] != "Changed upstream"  # still the cached copy
    resp = await gw.get(url, headers={"Cache-Control": "no-cache"})
    assert resp.headers["X-Cache"] == "BYPASS" and (await resp.json())["title"] == "Changed upstream"
    resp = await gw.get(url)
    assert resp.headers["X-Cache"] == "HIT" and resp.headers["Age"] == "0"
    assert (await resp.json())["title"] == "Changed upstream"
    assert (await gw.get(url, headers={"Pragma": "no-cache"})).headers["X-Cache"] == "BYPASS"
    # max-age: the caller accepts a copy only this old
    clock.now += 10
    assert (await gw.get(url, headers={"Cache-Control": "max-age=30"})).headers["X-Cache"] == "HIT"
    assert (await gw.get(url, headers={"Cache-Control": "max-age=5"})).headers["X-Cache"] == "MISS"


# --------------------------------------------------------------------------- upstream Cache-Control / Expires

ORIGIN = """
upstreams:
  origin:
    base_url: ${ORIGIN_URL}
    timeouts: {connect: 2s, read: 1s, total: 1s}   # generous: a loaded 2-core machine with xdist
routes:
  doc:
    stable: GET /v1/doc/{name}
    upstream: origin
    auth: none
    targets: ["GET /doc/{name}"]
    cache: {ttl: 60s, stale_if_error: 1h}
  private_doc:
    stable: GET /v1/private/{name}
    upstream: origin
    auth: none
    targets: ["GET /doc/{name}"]
    cache: {ttl: 60s, private: true}
"""


def _origin_headers(name: str) -> dict[str, str]:
    now = time.time()
    return {
        "plain": {},
        "private": {"Cache-Control": "private, max-age=600"},
        "nostore": {"Cache-Control": "no-store"},
        "short": {"Cache-Control": "max-age=5"},
        "shared": {"Cache-Control": "public, max-age=600, s-maxage=3"},
        "expired": {"Expires": "0"},
        "expires": {"Expires": email.utils.formatdate(now + 5, usegmt=True), "Date": email.utils.formatdate(now)},
    }[name]


async def _origin(aiohttp_server: Any) -> tuple[TestServer, Counter[str]]:
    """A tiny upstream on a real socket; ``hits["_delay_ms"]`` makes it slow."""
    hits: Counter[str] = Counter()

    async def doc(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        hits[name] += 1
        if hits["_delay_ms"]:
            await asyncio.sleep(hits["_delay_ms"] / 1000)
        return web.json_response({"name": name, "fetch": hits[name]}, headers=_origin_headers(name))

    app = web.Application()
    app.router.add_get("/doc/{name}", doc)
    server: TestServer = await aiohttp_server(app)
    return server, hits


async def _fetches(gw: TestClient[Any, Any], url: str, times: int) -> list[str]:
    out = []
    for _ in range(times):
        resp = await gw.get(url)
        assert resp.status == 200, await resp.text()
        out.append(resp.headers["X-Cache"])
    return out


async def test_upstream_cache_control_and_expires_are_honoured(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    server, hits = await _origin(aiohttp_server)
    gw = await make_gateway(ORIGIN, env={"ORIGIN_URL": str(server.make_url(""))})
    clock = Clock()
    gw.server.app[GATEWAY].caches.clock = clock
    assert await _fetches(gw, "/v1/doc/plain", 2) == ["MISS", "HIT"]
    # private / no-store are never stored ...
    assert await _fetches(gw, "/v1/doc/private", 2) == ["MISS", "MISS"]
    assert await _fetches(gw, "/v1/doc/nostore", 2) == ["MISS", "MISS"]
    # ... unless the route opts in (its keys are per client and credential anyway)
    assert await _fetches(gw, "/v1/private/private", 2) == ["MISS", "HIT"]
    assert await _fetches(gw, "/v1/private/nostore", 2) == ["MISS", "HIT"]
    # max-age, s-maxage (a shared cache reads it first) and Expires shorten the route's ttl
    assert await _fetches(gw, "/v1/doc/short", 2) == ["MISS", "HIT"]
    assert await _fetches(gw, "/v1/doc/shared", 2) == ["MISS", "HIT"]
    assert await _fetches(gw, "/v1/doc/expires", 2) == ["MISS", "HIT"]
    assert await _fetches(gw, "/v1/doc/expired", 2) == ["MISS", "MISS"]
    clock.now += 4
    assert await _fetches(gw, "/v1/doc/short", 1) == ["HIT"]
    assert await _fetches(gw, "/v1/doc/shared", 1) == ["MISS"]
    clock.now += 2
    assert await _fetches(gw, "/v1/doc/short", 1) == ["MISS"]
    assert await _fetches(gw, "/v1/doc/expires", 1) == ["MISS"]
    assert await _fetches(gw, "/v1/doc/plain", 1) == ["HIT"]
    assert hits == Counter(plain=1, private=3, nostore=3, short=2, shared=2, expires=2, expired=2)


async def test_stale_copy_when_the_upstream_is_unreachable(make_gateway: Any, aiohttp_server: Any) -> None:
    server, hits = await _origin(aiohttp_server)
    registry = CollectorRegistry()
    gw = await make_gateway(ORIGIN, env={"ORIGIN_URL": str(server.make_url(""))}, registry=registry)
    clock = Clock()
    gw.server.app[GATEWAY].caches.clock = clock
    warm = await gw.get("/v1/doc/plain")
    assert warm.status == 200
    await server.close()  # connections are now refused
    clock.now += 120  # past the ttl, inside the 1h stale window
    resp = await gw.get("/v1/doc/plain")
    assert resp.status == 200 and resp.headers["X-Cache"] == "STALE"
    assert resp.headers["Age"] == "120"
    assert "Warning" not in resp.headers  # obsolete (RFC 9111): X-Cache: STALE says it
    assert await resp.json() == await warm.json()
    assert _sample(registry, "gateway_cache_requests_total", route="doc", result="stale") == 1
    # nothing cached for this one: the usual 502 naming the route
    resp = await gw.get("/v1/doc/short")
    err = await resp.json()
    assert resp.status == 502 and err["error"]["route"] == "doc" and "X-Cache" not in resp.headers
    clock.now += 3600  # past the stale window too
    resp = await gw.get("/v1/doc/plain")
    assert resp.status == 502 and (await resp.json())["error"]["code"] == "upstream_unreachable"
    assert hits["plain"] == 1


async def test_stale_copy_on_5xx(make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes) -> None:
    gw, clock = await _gw(make_gateway, sandbox_env)
    state = sandboxes.posthog_state
    url = f"/v1/posthog/projects/1/notebooks/{state.visible(1)[0].short_id}"
    good = await (await gw.get(url)).json()
    clock.now += 90
    state.apply_switches({"faults": {"/api/projects/1/notebooks": {"status": 500}}})
    resp = await gw.get(url)
    assert resp.status == 200 and resp.headers["X-Cache"] == "STALE" and "Warning" not in resp.headers
    assert await resp.json() == good
    # a caller that accepts nothing this old gets the error, as with no-cache, not the old copy
    resp = await gw.get(url, headers={"Cache-Control": "max-age=60"})
    assert resp.status == 502 and (await resp.json())["error"]["code"] == "upstream_failed"
    resp = await gw.get(url, headers={"Cache-Control": "max-age=120"})
    assert resp.status == 200 and resp.headers["X-Cache"] == "STALE"
    # a list never fetched before: no copy, so the usual 502
    resp = await gw.get(f"{LIST}?limit=9")
    assert resp.status == 502 and (await resp.json())["error"]["route"] == "ph_list"
    clock.now += 600  # beyond the detail route's 10m stale window
    state.apply_switches({"faults": {"/api/projects/1/notebooks": {"status": 503}}})
    resp = await gw.get(url)
    assert resp.status == 502 and (await resp.json())["error"]["route"] == "ph_nb"
    state.reset_switches()
    resp = await gw.get(url)
    assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
    # deleted behind the gateway's back: once the upstream says 404, no stale copy of it is kept
    state.visible(1)[0].deleted = True
    clock.now += 61
    assert (await gw.get(url)).status == 404
    state.apply_switches({"faults": {"/api/projects/1/notebooks": {"status": 500}}})
    resp = await gw.get(url)
    assert resp.status == 502 and "X-Cache" not in resp.headers


async def test_stale_copy_on_timeout(make_gateway: Any, aiohttp_server: Any) -> None:
    server, hits = await _origin(aiohttp_server)
    gw = await make_gateway(ORIGIN, env={"ORIGIN_URL": str(server.make_url(""))})
    clock = Clock()
    gw.server.app[GATEWAY].caches.clock = clock
    warm = await (await gw.get("/v1/doc/plain")).json()
    clock.now += 61
    hits["_delay_ms"] = 1300  # longer than the origin's 1s timeout
    resp = await gw.get("/v1/doc/plain")
    assert resp.status == 200 and resp.headers["X-Cache"] == "STALE" and "Warning" not in resp.headers
    assert await resp.json() == warm
    resp = await gw.get("/v1/doc/short")
    assert resp.status == 504 and (await resp.json())["error"]["route"] == "doc"


async def test_concurrent_misses_make_one_upstream_request(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    registry = CollectorRegistry()
    gw, _ = await _gw(make_gateway, sandbox_env, registry=registry)
    state = sandboxes.posthog_state
    short_id = state.visible(1)[0].short_id
    url = f"/v1/posthog/projects/1/notebooks/{short_id}"
    state.latency_ms = 100  # so the ten requests overlap
    responses = await asyncio.gather(*(gw.get(url) for _ in range(10)))
    bodies = [await r.json() for r in responses]
    assert all(r.status == 200 and r.headers["X-Cache"] == "MISS" for r in responses)
    assert all(b == bodies[0] for b in bodies) and bodies[0]["id"] == short_id
    assert state.count("GET", f"/api/projects/1/notebooks/{short_id}/") == 1
    assert _sample(registry, "gateway_cache_coalesced_total", route="ph_nb") == 9
    # an aggregation is coalesced whole: 250 notebooks are 3 upstream pages, fetched once
    responses = await asyncio.gather(*(gw.get(f"{LIST}?all=true") for _ in range(5)))
    assert {len((await r.json())["items"]) for r in responses} == {250}
    assert state.count("GET", "/api/projects/1/notebooks/") == 3
    # different clients' misses are never merged into one fetch
    gw2, _ = await _gw(make_gateway, sandbox_env, CLIENTS)
    state.reset_counters()
    await asyncio.gather(gw2.get(url, headers=ALICE), gw2.get(url, headers=BOB), gw2.get(url, headers=ALICE))
    assert state.count("GET", f"/api/projects/1/notebooks/{short_id}/") == 2


async def test_writes_invalidate_the_entity_and_its_collection(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    registry = CollectorRegistry()
    gw, _ = await _gw(make_gateway, sandbox_env, CLIENTS, registry=registry)
    a, b = (nb.short_id for nb in sandboxes.posthog_state.visible(1)[:2])
    urls = {
        "list": f"{LIST}?limit=5",
        "a": f"{LIST}/{a}",
        "a_activity": f"{LIST}/{a}/activity",
        "b": f"{LIST}/{b}",
        "other_project": "/v1/posthog/projects/2/notebooks?limit=5",
    }
    for url in urls.values():
        assert (await gw.get(url, headers=ALICE)).headers["X-Cache"] == "MISS"
        assert (await gw.get(url, headers=BOB)).headers["X-Cache"] == "MISS"

    async def states(headers: dict[str, str]) -> dict[str, str]:
        return {name: (await gw.get(url, headers=headers)).headers["X-Cache"] for name, url in urls.items()}

    # bob's edit drops what alice had cached too: the entity changed for everyone
    resp = await gw.patch(f"{LIST}/{a}", json={"title": "Renamed through the gateway"}, headers=BOB)
    assert resp.status == 200
    assert await states(ALICE) == {
        "list": "MISS",
        "a": "MISS",
        "a_activity": "MISS",
        "b": "HIT",
        "other_project": "HIT",
    }
    assert (await (await gw.get(urls["a"], headers=ALICE)).json())["title"] == "Renamed through the gateway"
    listed = await (await gw.get(urls["list"], headers=ALICE)).json()
    assert listed["items"][0] == {"id": a, "title": "Renamed through the gateway"}
    # delete: the entity is gone and the collection no longer lists it
    assert (await gw.delete(f"{LIST}/{a}", headers=ALICE)).status == 204
    assert (await gw.get(urls["a"], headers=ALICE)).status == 404
    listed = await (await gw.get(urls["list"], headers=ALICE)).json()
    assert a not in [i["id"] for i in listed["items"]]
    assert (await gw.get(urls["b"], headers=ALICE)).headers["X-Cache"] == "HIT"
    # create: the collection is refetched
    resp = await gw.post(LIST, json={"title": "Brand new"}, headers=ALICE)
    assert resp.status == 201
    new_id = (await resp.json())["id"]
    resp = await gw.get(urls["list"], headers=BOB)
    assert resp.headers["X-Cache"] == "MISS" and (await resp.json())["items"][0]["id"] == new_id
    # a rejected write (bad body) never reached the upstream and drops nothing
    resp = await gw.patch(f"{LIST}/{b}", data=b"{not json", headers={**ALICE, "Content-Type": "application/json"})
    assert resp.status == 400
    assert (await gw.get(urls["b"], headers=ALICE)).headers["X-Cache"] == "HIT"
    assert _sample(registry, "gateway_cache_invalidations_total", route="ph_update", cause="write") == 1


async def test_aggregations_and_their_pages_never_mix_before_and_after_a_write(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw, _ = await _gw(make_gateway, sandbox_env)
    state = sandboxes.posthog_state

    async def snapshot() -> tuple[list[str], list[str], dict[str, str]]:
        everything = await gw.get(f"{LIST}?all=true")
        page1 = await gw.get(f"{LIST}?limit=100")
        cursor = (await page1.json())["next_cursor"]
        page2 = await gw.get(f"{LIST}?limit=100&cursor={cursor}")
        seen = {"all": everything.headers["X-Cache"], "page1": page1.headers["X-Cache"]}
        seen["page2"] = page2.headers["X-Cache"]
        pages = [i["id"] for i in (await page1.json())["items"] + (await page2.json())["items"]]
        return [i["id"] for i in (await everything.json())["items"]], pages, seen

    all_ids, page_ids, seen = await snapshot()
    assert seen == {"all": "MISS", "page1": "MISS", "page2": "MISS"} and page_ids == all_ids[:200]
    assert (await snapshot())[2] == {"all": "HIT", "page1": "HIT", "page2": "HIT"}
    resp = await gw.post(LIST, json={"title": "Shifts every page by one"})
    new_id = (await resp.json())["id"]
    all_ids, page_ids, seen = await snapshot()
    assert seen == {"all": "MISS", "page1": "MISS", "page2": "MISS"}
    assert all_ids[0] == new_id and page_ids == all_ids[:200] and len(all_ids) == 251

    # a write landing while an aggregation is being fetched: that mixed result is never served later
    state.latency_ms = 60
    first = state.visible(1)[0].short_id
    running = asyncio.ensure_future(gw.get(f"{LIST}?all=true&limit=50"))
    await asyncio.sleep(0.03)
    assert (await gw.patch(f"{LIST}/{first}", json={"title": "Written mid-aggregation"})).status == 200
    await running
    state.latency_ms = 0
    resp = await gw.get(f"{LIST}?all=true&limit=50")
    assert resp.headers["X-Cache"] == "MISS"
    assert (await resp.json())["items"][0] == {"id": first, "title": "Written mid-aggregation"}


async def test_the_cache_is_bounded_by_bytes(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    registry = CollectorRegistry()
    root = "\ncache: {backend: memory, max_bytes: 8kb, max_entry_bytes: 4kb}\n"
    gw, _ = await _gw(make_gateway, sandbox_env, root, registry=registry)
    ids = [nb.short_id for nb in sandboxes.posthog_state.visible(1)[:40]]
    for short_id in ids:
        assert (await gw.get(f"{LIST}/{short_id}")).headers["X-Cache"] == "MISS"
    held = _sample(registry, "gateway_cache_bytes")
    assert 4000 < held <= 8000
    assert 0 < _sample(registry, "gateway_cache_entries") < 40
    assert (await gw.get(f"{LIST}/{ids[-1]}")).headers["X-Cache"] == "HIT"  # the newest stay
    assert (await gw.get(f"{LIST}/{ids[0]}")).headers["X-Cache"] == "MISS"  # the oldest were evicted
    # an aggregation larger than max_entry_bytes is served, never stored
    for _ in range(2):
        resp = await gw.get(f"{LIST}?all=true")
        assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
    assert _sample(registry, "gateway_cache_bytes") <= 8000


async def test_admin_purge_by_route_prefix_and_all(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw, _ = await _gw(make_gateway, sandbox_env, CLIENTS)
    a = sandboxes.posthog_state.visible(1)[0].short_id
    urls = [f"{LIST}?limit=2", f"{LIST}/{a}", f"{LIST}/{a}/activity", "/v1/posthog/projects/2/notebooks?limit=2"]

    async def states() -> list[str]:
        return [(await gw.get(u, headers=ALICE)).headers["X-Cache"] for u in urls]

    await states()
    assert await states() == ["HIT"] * 4
    # guarded like the other admin endpoints
    assert (await gw.post("/admin/cache/purge?all=true")).status == 401
    resp = await gw.post("/admin/cache/purge?all=true", headers=ALICE)
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "invalid_api_key"
    resp = await gw.post("/admin/cache/purge", json={"route": "ph_nb"}, headers=OPS)
    assert resp.status == 200 and await resp.json() == {
        "status": "purged",
        "route": "ph_nb",
        "prefix": None,
        "deleted": 1,
        "workers": 1,
    }
    assert await states() == ["HIT", "MISS", "HIT", "HIT"]
    # a prefix matches whole segments: /projects/1 is not /projects/10
    resp = await gw.post("/admin/cache/purge?prefix=/v1/posthog/projects/1/notebooks/" + a, headers=OPS)
    assert (await resp.json())["deleted"] == 2
    assert await states() == ["HIT", "MISS", "MISS", "HIT"]
    resp = await gw.post("/admin/cache/purge", json={"prefix": "/v1/posthog/projects/1"}, headers=OPS)
    assert (await resp.json())["deleted"] == 3
    registry = gw.app[GATEWAY].registry
    purged = {"route": "(prefix)", "cause": "purge"}  # a prefix alone is not "(all)"
    assert registry.get_sample_value("gateway_cache_invalidations_total", purged) == 2
    assert await states() == ["MISS", "MISS", "MISS", "HIT"]
    resp = await gw.post("/admin/cache/purge", json={"all": True}, headers=OPS)
    assert (await resp.json())["deleted"] == 4
    assert await states() == ["MISS"] * 4
    for query, code in (("", "bad_purge"), ("?route=nope", "unknown_route"), ("?prefix=v1", "bad_purge")):
        resp = await gw.post("/admin/cache/purge" + query, headers=OPS)
        assert resp.status == 400 and (await resp.json())["error"]["code"] == code


async def test_purge_without_admin_keys_or_cache(make_gateway: Any, sandbox_env: dict[str, str]) -> None:
    gw, _ = await _gw(make_gateway, sandbox_env)
    resp = await gw.post("/admin/cache/purge?all=true")
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "admin_disabled"
    no_cache = POSTHOG.replace("    cache: {ttl: 60s, stale_if_error: 1h}\n", "").replace(
        "    cache: {ttl: 60s, stale_if_error: 10m, vary: [Accept-Language]}\n", ""
    )
    gw = await make_gateway(no_cache.replace("    cache: {ttl: 60s}\n", "") + CLIENTS, env={**sandbox_env, **KEYS})
    resp = await gw.post("/admin/cache/purge?all=true", headers=OPS)
    err = (await resp.json())["error"]
    assert resp.status == 409 and err["code"] == "cache_disabled" and "no route" in err["message"]
    resp = await gw.get(f"{LIST}?limit=1", headers=ALICE)
    assert resp.status == 200 and "X-Cache" not in resp.headers
    # switched off (ROUTEGATE_CACHE=off in the shipped file) although routes have cache: sections
    gw = await make_gateway(POSTHOG + "cache: {enabled: false}\n" + CLIENTS, env={**sandbox_env, **KEYS})
    err = (await (await gw.post("/admin/cache/purge?all=true", headers=OPS)).json())["error"]
    assert err["code"] == "cache_disabled" and "cache.enabled is false" in err["message"]


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "routes.yaml", env={"POSTHOG_URL": "http://127.0.0.1:1", "POSTHOG_API_KEY": "x"})
    return [str(p) for p in info.value.problems]


def test_cache_config_mistakes_are_reported_with_lines() -> None:
    text = POSTHOG.replace("    cache: {ttl: 60s}\n", "    cache: {ttl: 60s, stale_if_eror: 1h}\n")
    text = text.replace(
        '    targets: ["PATCH /api/projects/{project_id}/notebooks/{short_id}/"]\n',
        '    targets: ["PATCH /api/projects/{project_id}/notebooks/{short_id}/"]\n'
        "    cache: {ttl: 1m, invalidates: [ph_lits]}\n",
    )
    text += "cache: {backend: redis, max_bytes: lots}\n"
    problems = _problems(text)
    lines = text.splitlines()

    def line_of(fragment: str) -> int:
        return next(i + 1 for i, line in enumerate(lines) if fragment in line)

    joined = "\n".join(problems)
    assert f"routes.yaml:{line_of('stale_if_eror')}: routes.ph_activity.cache.stale_if_eror: unknown key" in joined
    assert "did you mean 'stale_if_error'?" in joined
    assert "routes.ph_update.cache.ttl: unknown key" in joined  # writes are never cached
    assert "never cached" in joined
    assert "cache.max_bytes: 'lots' is not a size" in joined
    assert "backend 'redis' needs redis: {url: {env: VAR}}" in joined
    problems = _problems(POSTHOG + "    cache: {invalidates: [ph_lits]}\n")
    assert any("no route named 'ph_lits' (did you mean 'ph_list'?)" in p for p in problems)
    problems = _problems(POSTHOG.replace("cache: {ttl: 60s}", "cache: {ttl: 0s}"))
    assert any("give a ttl" in p for p in problems)
    problems = _problems(POSTHOG + "cache: {redis: {url: {env: REDIS_URL}}}\n")
    assert any("only read with backend: redis" in p for p in problems)
    problems = _problems(POSTHOG + "cache: {backend: redis, redis: {url: redis://127.0.0.1}}\n")
    assert any("secrets are never written in routes.yaml" in p for p in problems)


async def test_shipped_routes_cache_reads_when_switched_on(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    cfg = parse_config(ROUTES.read_text(), str(ROUTES), env={})
    assert cfg.cache.enabled  # on unless ROUTEGATE_CACHE=off
    assert not parse_config(ROUTES.read_text(), str(ROUTES), env={"ROUTEGATE_CACHE": "off"}).cache.enabled
    reads = {r.name for r in cfg.routes if r.method == "GET"}
    assert {r.name for r in cfg.routes if r.cache is not None and r.cache.ttl > 0} == reads
    off = await make_gateway()  # the suite's sandbox_env says ROUTEGATE_CACHE=off
    resp = await off.get(f"{LIST}?limit=1")
    assert resp.status == 200 and "X-Cache" not in resp.headers
    on = await make_gateway(env={**sandbox_env, "ROUTEGATE_CACHE": "on"})
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    for url in (f"{LIST}?limit=1", f"{LIST}/{short_id}", "/v1/observable/notebooks?type=public,shared&all=true"):
        assert (await on.get(url)).headers["X-Cache"] == "MISS"
        assert (await on.get(url)).headers["X-Cache"] == "HIT"
    assert (await on.delete(f"{LIST}/{short_id}")).status == 204
    assert (await on.get(f"{LIST}?limit=1")).headers["X-Cache"] == "MISS"
