"""What the hot-path speed-ups must not change, through real HTTP: JSON that orjson refuses
still passes exactly as the standard library reads it, and request ids stay unique."""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import os
import threading
import urllib.request
import weakref
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import jsonio, workers
from gateway.server import GATEWAY, new_request_id
from gateway.server import framing as server
from sandbox.runner import Sandboxes
from tests.fake_upstream import Reply, start_fake
from tests.helpers.cache import _gw
from tests.helpers.hostile import FAKE_YAML

#: valid JSON that orjson alone refuses: an integer beyond 64 bits and a lone surrogate escape
ODD = b'{"id": 1180591620717411303424, "note": "\\ud800", "n": -18446744073709551617}'


async def test_json_orjson_refuses_still_passes_as_the_standard_library_reads_it(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    fake, _server, url = await start_fake(aiohttp_server)
    gw: TestClient[Any, Any] = await make_gateway(FAKE_YAML.format(url=url), env={"FAKE_KEY": "k-123456"})
    fake.script("/things/odd", Reply(200, ODD, {"Content-Type": "application/json"}))
    resp = await gw.get("/v1/things/odd")
    assert resp.status == 200, await resp.text()
    assert json.loads(await resp.read()) == json.loads(ODD)
    # a request body with such an integer is validated and forwarded with its value intact
    big = {"title": "x", "count": 2**70, "big_negative": -(2**65)}
    fake.script("/things", Reply(201, b"{}", {"Content-Type": "application/json"}))
    resp = await gw.post("/v1/things", data=json.dumps(big), headers={"Content-Type": "application/json"})
    assert resp.status == 201, await resp.text()
    sent = [h for h in fake.hits if h.path == "/things"]
    assert len(sent) == 1 and json.loads(sent[0].body) == big


def test_jsonio_agrees_with_the_standard_library() -> None:
    for text in (ODD, b'[1.5, "\xc3\xa9", {"k": null}]', '["\\u00e9"]'):
        assert repr(jsonio.loads(text)) == repr(json.loads(text))
    for value in ({"e": "é", "n": [1, 2.5, None, True]}, {"big": 2**80}, {1: "int key"}):
        assert json.loads(jsonio.dumps(value)) == json.loads(json.dumps(value))
        assert b" " not in jsonio.dumps(value).replace(b"int key", b"")  # compact
    assert jsonio.dumps({"e": "é"}) == '{"e":"é"}'.encode()  # UTF-8, not \\u escapes
    for bad in (b"{", b"", b"[1,]", b"\xff", b'{"a": NaN}', b"[Infinity]"):  # NaN is not JSON (RFC 8259)
        try:
            jsonio.loads(bad)
        except ValueError:  # json.JSONDecodeError and UnicodeDecodeError both are
            continue
        raise AssertionError(f"{bad!r} parsed")


def test_request_ids_are_unique_in_a_process_and_across_forked_workers() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker forked after the server module was imported, as gateway serve --workers does
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child[:16] != next(iter(ids))[:16]


def test_the_pid_metrics_files_are_named_by_follows_each_fork() -> None:
    assert workers.process_id() == os.getpid()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, f"{workers.process_id()} {os.getpid()}".encode())
        os._exit(0)
    os.close(write)
    seen, real = os.read(read, 64).decode().split()
    os.close(read)
    os.waitpid(pid, 0)
    assert seen == real == str(pid)


async def test_remembered_cache_keys_stay_small_and_still_split_by_vary(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw, _clock = await _gw(make_gateway, sandbox_env)
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    url = f"/v1/posthog/projects/1/notebooks/{short_id}"
    cache = gw.server.app[GATEWAY].runtime.proxy.cache
    long_language = "de-CH," + ",".join(f"x-{i:04d};q=0.1" for i in range(60))  # a vary header of ~900 bytes
    for language in ("en", "en", long_language, long_language):
        resp = await gw.get(url, headers={"Accept-Language": language})
        assert resp.status == 200, await resp.text()
    assert len(cache._keys) == 1  # the short request is remembered, the long one is hashed each time
    again = await gw.get(url, headers={"Accept-Language": long_language})
    assert again.headers["X-Cache"] == "HIT"  # and still finds its own entry
    other = await gw.get(url, headers={"Accept-Language": "fr"})
    assert other.headers["X-Cache"] == "MISS"  # vary still splits entries
    assert len(cache._keys) == 2


async def test_upstreams_are_asked_for_identity_and_a_compressed_answer_still_works(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    fake, _server, url = await start_fake(aiohttp_server)
    gw: TestClient[Any, Any] = await make_gateway(FAKE_YAML.format(url=url), env={"FAKE_KEY": "k-123456"})
    page = {"id": "x", "text": "é" * 3000}
    packed = gzip.compress(json.dumps(page).encode())
    fake.script("/things/zipped", Reply(200, packed, {"Content-Type": "application/json", "Content-Encoding": "gzip"}))
    resp = await gw.get("/v1/things/zipped")
    assert resp.status == 200, await resp.text()
    assert await resp.json() == page  # read whole past its (compressed) Content-Length, then checked
    assert fake.hits[-1].headers["Accept-Encoding"] == "identity"


async def test_a_cache_hit_is_still_only_for_the_exact_request_that_filled_it(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    """Hits skip parameter parsing: a query that never parsed can never have an entry."""
    gw, _clock = await _gw(make_gateway, sandbox_env)
    state = sandboxes.posthog_state
    url = "/v1/posthog/projects/1/notebooks"
    first = await gw.get(url, params=[("limit", "2")])
    assert first.status == 200 and first.headers["X-Cache"] == "MISS", await first.text()
    calls = state.total_requests
    again = await gw.get(url, params=[("limit", "2")])
    assert again.headers["X-Cache"] == "HIT" and await again.json() == await first.json()
    bad = await gw.get(url, params=[("limit", "2"), ("nonsense", "1")])
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "bad_query"
    twice = await gw.get(url, params=[("limit", "2"), ("limit", "2")])
    assert twice.status == 400
    head = await gw.head(url, params=[("limit", "2")])
    assert head.status == 200 and head.headers["X-Cache"] == "HIT"
    streamed = await gw.get(url, params=[("limit", "2")], headers={"Accept": "application/x-ndjson"})
    assert streamed.headers["Content-Type"] == "application/x-ndjson" and "X-Cache" not in streamed.headers
    assert len((await streamed.read()).splitlines()) == 2
    assert state.total_requests == calls + 1  # only the NDJSON page went upstream


async def test_the_answer_is_on_the_wire_before_it_is_counted_and_logged(
    make_gateway: Any, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, _server, url = await start_fake(aiohttp_server)
    gw: TestClient[Any, Any] = await make_gateway(FAKE_YAML.format(url=url), env={"FAKE_KEY": "k-123456"})
    fake.script("/things/a", Reply(200, b'{"id": "a"}', {"Content-Type": "application/json"}))
    received = threading.Event()
    seen: list[tuple[str, int, bool]] = []
    account = server._account

    def slow_account(request: Any, rid: str, status: int, *rest: Any) -> None:
        # holds the event loop: the client can only have its answer if it was written before this ran
        seen.append((request.path, status, received.wait(10)))
        account(request, rid, status, *rest)

    monkeypatch.setattr(server, "_account", slow_account)

    def fetch() -> bytes:
        with urllib.request.urlopen(str(gw.make_url("/v1/things/a?q=1")), timeout=20) as r:
            body: bytes = r.read()
        received.set()
        return body

    assert json.loads(await asyncio.to_thread(fetch)) == {"id": "a"}
    assert seen == [("/v1/things/a", 200, True)]
    metrics = await (await gw.get("/metrics")).text()  # and it was counted all the same
    assert 'gateway_requests_total{method="GET",route="get_thing",status_class="2xx"} 1.0' in metrics


class _Node:
    me: _Node | None = None


def test_a_serving_process_still_collects_cycles_unprompted() -> None:
    saved = gc.get_threshold()
    try:
        workers.settle_gc()
        assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] == workers.GC_YOUNG_OBJECTS
        node = _Node()
        node.me = node  # a cycle: reference counting alone never frees it
        gone = weakref.ref(node)
        del node
        for _ in range(2 * workers.GC_YOUNG_OBJECTS):  # more cyclic garbage, as error tracebacks make
            loop: list[Any] = []
            loop.append(loop)
        assert gone() is None  # the collector ran by itself and took it
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
