"""HTTP conventions through real HTTP: ETag / If-None-Match 304, negotiated compression, Date on hits."""

from __future__ import annotations

import email.utils
import gzip
import json
import zlib
from typing import Any

import pytest
from aiohttp import ClientSession
from multidict import CIMultiDict

from sandbox.runner import Sandboxes
from tests.helpers.backup import Stack
from tests.helpers.cache import KEYS, LIST, POSTHOG, _gw

PLAIN = """
  ph_nb_plain:
    stable: GET /v1/plain/projects/{project_id}/notebooks/{short_id}
    upstream: posthog
    targets: ["GET /api/projects/{project_id}/notebooks/{short_id}/"]
    response:
      item: {id: short_id, title: title}
"""
IDENTITY = {"Accept-Encoding": "identity"}


async def test_etag_and_if_none_match_on_an_uncached_route(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw = await make_gateway(POSTHOG.replace("routes:\n", "routes:\n" + PLAIN, 1), env={**sandbox_env, **KEYS})
    state = sandboxes.posthog_state
    short_id = state.visible(1)[0].short_id
    url = f"/v1/plain/projects/1/notebooks/{short_id}"
    first = await gw.get(url)
    assert first.status == 200
    etag = first.headers["ETag"]
    assert etag.startswith('W/"') and etag.endswith('"')
    again = await gw.get(url, headers={"If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    assert again.headers["ETag"] == etag and "Content-Type" not in again.headers
    # a list naming it, or *, matches too; another tag does not
    listed = await gw.get(url, headers={"If-None-Match": f'"other", {etag.removeprefix("W/")}'})
    assert listed.status == 304
    assert (await gw.get(url, headers={"If-None-Match": "*"})).status == 304
    # the list split over two header lines is the same list (RFC 9110 5.3)
    split = await gw.get(url, headers=CIMultiDict([("If-None-Match", 'W/"old"'), ("If-None-Match", etag)]))
    assert split.status == 304
    other = await gw.get(url, headers={"If-None-Match": '"nope"'})
    assert other.status == 200 and await other.json() == await first.json()
    # a change upstream is a new tag: the old one gets the whole answer
    patched = await gw.patch(f"/v1/posthog/projects/1/notebooks/{short_id}", json={"title": "renamed"})
    assert patched.status == 200 and "ETag" not in patched.headers  # writes carry no validator
    changed = await gw.get(url, headers={"If-None-Match": etag})
    assert changed.status == 200 and (await changed.json())["title"] == "renamed"
    assert changed.headers["ETag"] != etag


async def test_cache_hit_keeps_its_etag_answers_304_and_dates_itself_when_stored(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw, clock = await _gw(make_gateway, sandbox_env)
    stored_at = int(clock.now)
    miss = await gw.get(f"{LIST}?limit=5")
    assert miss.headers["X-Cache"] == "MISS"
    etag = miss.headers["ETag"]
    clock.now += 30
    hit = await gw.get(f"{LIST}?limit=5")
    assert hit.headers["X-Cache"] == "HIT" and hit.headers["Age"] == "30" and hit.headers["ETag"] == etag
    # Date is when the entry was stored, so Date + Age is now (RFC 9111 4.2.3)
    date = email.utils.parsedate_to_datetime(hit.headers["Date"]).timestamp()
    assert abs(date - stored_at) <= 1
    assert "Warning" not in hit.headers
    not_modified = await gw.get(f"{LIST}?limit=5", headers={"If-None-Match": etag})
    assert not_modified.status == 304 and await not_modified.read() == b""
    assert not_modified.headers["X-Cache"] == "HIT" and not_modified.headers["Age"] == "30"
    assert not_modified.headers["ETag"] == etag and not_modified.headers["Cache-Control"] == "private"
    assert sandboxes.posthog_state.count("GET", "/api/projects/1/notebooks/") == 1


async def test_all_true_collections_are_compressed_as_accept_encoding_allows(
    make_gateway: Any, sandbox_env: dict[str, str]
) -> None:
    gw, _ = await _gw(make_gateway, sandbox_env)
    url = f"{LIST}?all=true"
    plain = await gw.get(url, headers=IDENTITY)
    body = await plain.read()
    assert plain.status == 200 and "Content-Encoding" not in plain.headers
    assert len(body) >= 1024, "the sandbox's collection must be large enough to be compressed"
    assert plain.headers["X-Cache"] == "MISS"
    # the stored answer (a HIT) is compressed too, and it is the same answer
    async with (
        ClientSession(auto_decompress=False) as raw,
        raw.get(gw.make_url(url), headers={"Accept-Encoding": "gzip"}) as resp,
    ):
        assert resp.status == 200 and resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["X-Cache"] == "HIT"
        assert "Accept-Encoding" in resp.headers["Vary"]
        zipped = await resp.read()
    assert gzip.decompress(zipped) == body and len(zipped) < len(body)
    # a page is small: sent as it is even when gzip is welcome
    page = await gw.get(f"{LIST}?limit=2", headers={"Accept-Encoding": "gzip"})
    assert page.status == 200 and "Content-Encoding" not in page.headers


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("deflate;q=0, gzip", "gzip"),  # deflate refused: aiohttp alone sent it, as the first coding named
        ("gzip;q=1.0, deflate;q=0.1", "gzip"),
        ("deflate, gzip", "gzip"),  # alike: gzip, what curl --compressed and browsers expect
        ("deflate;q=1, gzip;q=0.5", "deflate"),
        ("gzip;q=0, deflate;q=0", None),
        ("*;q=0.5", "gzip"),
        ("br, *;q=0", None),
        ("GZIP", "gzip"),
    ],
)
async def test_compression_follows_the_client_s_preference(
    make_gateway: Any, sandbox_env: dict[str, str], accept: str, coding: str | None
) -> None:
    gw, _ = await _gw(make_gateway, sandbox_env)
    async with (
        ClientSession(auto_decompress=False) as raw,
        raw.get(gw.make_url(f"{LIST}?all=true"), headers={"Accept-Encoding": accept}) as resp,
    ):
        assert resp.status == 200
        assert resp.headers.get("Content-Encoding") == coding
        assert "Accept-Encoding" in resp.headers["Vary"]
        body = await resp.read()
    if coding == "gzip":
        body = gzip.decompress(body)
    elif coding == "deflate":
        body = zlib.decompress(body)
    assert json.loads(body)["items"]


async def test_metrics_and_openapi_are_compressed_when_asked(make_gateway: Any, sandbox_env: dict[str, str]) -> None:
    gw, _ = await _gw(make_gateway, sandbox_env)
    assert (await gw.get(f"{LIST}?limit=1")).status == 200
    async with ClientSession(auto_decompress=False) as raw:
        for path in ("/metrics", "/openapi.json"):
            async with raw.get(gw.make_url(path), headers={"Accept-Encoding": "gzip"}) as resp:
                assert resp.status == 200 and resp.headers["Content-Encoding"] == "gzip", path
                text = gzip.decompress(await resp.read())
            plain = await gw.get(path, headers=IDENTITY)
            assert "Content-Encoding" not in plain.headers
            assert text.split(b"\n")[0] == (await plain.read()).split(b"\n")[0]


async def test_backup_script_revalidates_with_the_etag_it_stored(stack: Stack) -> None:
    run = await stack.backup("--observable-types", "", "--posthog-project", "1")
    assert run.code == 0, run.stderr
    visible = stack.ph.visible(1)
    index_path = stack.out / "index.json"
    index = json.loads(index_path.read_text())
    entries = {k: v for k, v in index["notebooks"].items() if k.startswith("posthog/1/")}
    assert len(entries) == len(visible) and all(e["etag"].startswith('W/"') for e in entries.values())
    # the listing now disagrees with every entry: each document is asked for again, conditionally
    for entry in entries.values():
        entry["updated_at"] = "2000-01-01T00:00:00Z"
    index_path.write_text(json.dumps(index))
    files = {k: (stack.out / e["file"]).stat().st_mtime_ns for k, e in entries.items()}
    stack.ph.reset_counters()
    run = await stack.backup("--observable-types", "", "--posthog-project", "1")
    assert run.code == 0, run.stderr
    assert stack.posthog_fetches() == len(visible)  # asked (Cache-Control: no-cache) ...
    assert f"fetched 0, unchanged {len(visible)}" in run.stderr  # ... and answered 304: no body, no rewrite
    assert {k: (stack.out / e["file"]).stat().st_mtime_ns for k, e in entries.items()} == files
    after = json.loads(index_path.read_text())["notebooks"]
    assert all(after[k]["updated_at"] != "2000-01-01T00:00:00Z" for k in entries)
    # a document that did change is fetched whole, and its new ETag stored
    edited = visible[3]
    stack.ph.update(edited, {"title": "Renamed for the ETag test"})
    run = await stack.backup("--observable-types", "", "--posthog-project", "1")
    assert run.code == 0, run.stderr
    key = f"posthog/1/{edited.short_id}"
    saved = json.loads((stack.out / entries[key]["file"]).read_text())
    assert saved["title"] == "Renamed for the ETag test"
    assert json.loads(index_path.read_text())["notebooks"][key]["etag"] != entries[key]["etag"]
