"""QA3: /openapi.json declares conditional requests, NDJSON and the response headers clients rely on,
and each declared thing is what the real gateway answers on that route."""

from __future__ import annotations

import importlib
import json
import re
from types import ModuleType
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from gateway.config import load_config
from sandbox.runner import Sandboxes
from tests.conftest import ROUTES

NDJSON = "application/x-ndjson"
KEYED = """
clients:
  keys:
    reader: {key: {env: READER_KEY}, methods: [GET], rate_limit: 1/h}
"""
READER = "rk_" + "r" * 30
#: headers a 304 may carry that a client reads; each one it carries must be declared on that route's 304
_CLIENT_HEADERS = ("ETag", "X-Request-ID", "X-Cache", "Age", "X-Next-Cursor", "Retry-After")


def _gets(sandboxes: Sandboxes) -> dict[str, str]:
    """Every stable GET route of the shipped routes.yaml: its path template → a URL answering 200."""
    nb_id = sandboxes.observable_state.by_kind("public")[0].id
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    urls = {
        "/v1/observable/notebooks": "/v1/observable/notebooks?type=public&limit=2",
        "/v1/observable/users/{login}/notebooks": "/v1/observable/users/alice/notebooks?limit=2",
        "/v1/observable/notebooks/{id}": f"/v1/observable/notebooks/{nb_id}",
        "/v1/observable/notebooks/{id}/module": f"/v1/observable/notebooks/{nb_id}/module",
        "/v1/observable/notebooks/{id}/version": f"/v1/observable/notebooks/{nb_id}/version",
        "/v1/posthog/projects/{project_id}/notebooks": "/v1/posthog/projects/1/notebooks?limit=2",
        "/v1/posthog/projects/{project_id}/notebooks/{short_id}": f"/v1/posthog/projects/1/notebooks/{short_id}",
        "/v1/posthog/projects/{project_id}/notebooks/{short_id}/activity": (
            f"/v1/posthog/projects/1/notebooks/{short_id}/activity?limit=1"
        ),
    }
    config = load_config(ROUTES, env={})
    assert set(urls) == {"/" + "/".join(s.raw for s in r.path.segments) for r in config.routes if r.method == "GET"}
    return urls


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        return dict(doc["components"]["headers"][name])
    return node


def _declared_headers(doc: dict[str, Any], response: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: _resolve(doc, h) for name, h in response.get("headers", {}).items()}


def _stable_operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(p, m, op) for p, item in doc["paths"].items() if p.startswith("/v1/") for m, op in item.items()]


@pytest.mark.parametrize("cache", ["on", "off"])
async def test_every_get_route_declares_and_answers_conditional_requests(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes, cache: str
) -> None:
    gw = await make_gateway(env={**sandbox_env, "ROUTEGATE_CACHE": cache})
    doc = await (await gw.get("/openapi.json")).json()
    validate(doc)
    for path, method, op in _stable_operations(doc):  # a validator exactly where a 304 can come back
        names = {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
        assert ("If-None-Match" in names) == ("304" in op["responses"]) == (method == "get"), (path, method)
    for path, url in _gets(sandboxes).items():
        responses = doc["paths"][path]["get"]["responses"]
        ok, not_modified = responses["200"], responses["304"]
        assert "content" not in not_modified  # no body: a generated client does not parse it as an error
        resp = await gw.get(url)
        body = await resp.read()
        assert resp.status == 200 and body, url
        etag = resp.headers.get("ETag")
        declared_etag = _declared_headers(doc, ok)["ETag"]
        if path.endswith("/module") and cache == "off":  # relayed as it comes: the document says when it has one
            assert etag is None and "response cache" in declared_etag["description"]
            continue
        assert etag is not None and etag.startswith('W/"'), url
        other = await gw.get(url, headers={"If-None-Match": 'W/"0000"'})  # another tag: the whole answer
        assert other.status == 200 and await other.read() == body
        again = await gw.get(url, headers={"If-None-Match": etag, "X-Request-ID": "qa3-conditional"})
        assert again.status == 304 and await again.read() == b"", url
        assert again.headers["ETag"] == etag and again.headers["X-Request-ID"] == "qa3-conditional"
        declared = _declared_headers(doc, not_modified)
        sent = {name for name in _CLIENT_HEADERS if name in again.headers}
        assert sent <= set(declared), (url, sent - set(declared))  # nothing undeclared...
        assert {"ETag", "X-Request-ID"} <= sent
        if cache == "on":  # ...and what the 304 declares of the cache is there when the cache is on
            assert {"X-Cache", "Age"} <= sent and int(again.headers["Age"]) >= 0, url


async def test_collections_declare_and_answer_ndjson(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw = await make_gateway(env={**sandbox_env, "ROUTEGATE_CACHE": "on"})
    doc = await (await gw.get("/openapi.json")).json()
    config = load_config(ROUTES, env={})
    paginated = {"/" + "/".join(s.raw for s in r.path.segments) for r in config.routes if r.pagination is not None}
    for path, method, op in _stable_operations(doc):  # NDJSON declared on the collections, and only there
        content = next(iter(r for s, r in op["responses"].items() if s.startswith("2"))).get("content", {})
        assert (NDJSON in content) == (path in paginated and method == "get"), (path, method)
    short_id = sandboxes.posthog_state.visible(1)[0].short_id  # a second activity entry: a page to follow
    renamed = await gw.patch(f"/v1/posthog/projects/1/notebooks/{short_id}", json={"title": "qa3"})
    assert renamed.status == 200
    for path, url in _gets(sandboxes).items():
        ok = doc["paths"][path]["get"]["responses"]["200"]
        resp = await gw.get(url, headers={"Accept": NDJSON})
        if path not in paginated:  # an entity has one form: asked for NDJSON, it answers its JSON
            assert resp.status == 200 and resp.content_type != NDJSON, url
            continue
        media = ok["content"][NDJSON]
        item = Draft202012Validator(media["x-item-schema"])
        assert media["schema"]["type"] == "string"  # the body is text: lines, each one item
        assert "X-Next-Cursor" in _declared_headers(doc, ok)
        assert resp.status == 200 and resp.content_type == NDJSON, url
        text = await resp.text()
        assert text.endswith("\n")
        lines = [json.loads(line) for line in text.splitlines()]
        for line in lines:
            assert [e.message for e in item.iter_errors(line)] == [], (url, line)
        as_json = await (await gw.get(url)).json()  # the same page as JSON: the same items, the same cursor
        assert lines == as_json["items"] and as_json["next_cursor"], url
        assert resp.headers["X-Next-Cursor"] == as_json["next_cursor"]
        following = await gw.get(url + "&cursor=" + resp.headers["X-Next-Cursor"], headers={"Accept": NDJSON})
        assert following.status == 200 and following.content_type == NDJSON
        nxt = [json.loads(line) for line in (await following.text()).splitlines()]
        assert nxt and nxt[0] != lines[0]
        whole = re.sub(r"limit=\d+", "limit=200", url)
        walked, cursor = [], ""
        for _ in range(20):  # X-Next-Cursor alone walks the collection; the last page has none
            last_nd = await gw.get(whole + cursor, headers={"Accept": NDJSON})
            walked += [json.loads(line) for line in (await last_nd.text()).splitlines()]
            if "X-Next-Cursor" not in last_nd.headers:
                break
            cursor = "&cursor=" + last_nd.headers["X-Next-Cursor"]
        assert "X-Next-Cursor" not in last_nd.headers, url
        assert walked == (await (await gw.get(whole + "&all=true")).json())["items"], url
        assert "X-Cache" not in last_nd.headers  # NDJSON bypasses the cache, as the header says
        assert "NDJSON" in _declared_headers(doc, ok)["X-Cache"]["description"]
        stream = await gw.get(whole + "&all=true", headers={"Accept": NDJSON})
        everything = [json.loads(line) for line in (await stream.text()).splitlines()]
        assert stream.status == 200 and stream.content_type == NDJSON and everything
        assert all(not list(item.iter_errors(line)) for line in everything)
        assert "ETag" not in stream.headers and "NDJSON `all=true`" in _declared_headers(doc, ok)["ETag"]["description"]


async def test_declared_response_headers_are_the_ones_sent(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    listing = "/v1/posthog/projects/{project_id}/notebooks"
    gw = await make_gateway(env={**sandbox_env, "ROUTEGATE_CACHE": "on"})
    doc = await (await gw.get("/openapi.json")).json()
    for path, method, op in _stable_operations(doc):
        for status, response in op["responses"].items():  # every answer names its request
            assert "X-Request-ID" in response["headers"], (path, method, status)
        cache_headers = {"X-Cache", "Age"} & set(op["responses"][next(iter(op["responses"]))]["headers"])
        assert bool(cache_headers) == (method == "get"), (path, method)  # the cache answers reads only
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):  # the gateway's own, as declared
        assert "X-Request-ID" in doc["paths"][path]["get"]["responses"]["200"]["headers"]
        assert "X-Request-ID" in (await gw.get(path)).headers, path
    ok = doc["paths"][listing]["get"]["responses"]["200"]
    first = await gw.get("/v1/posthog/projects/1/notebooks?limit=3")
    second = await gw.get("/v1/posthog/projects/1/notebooks?limit=3", headers={"X-Request-ID": "qa3-hdr"})
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert second.headers["X-Request-ID"] == "qa3-hdr" and int(second.headers["Age"]) >= 0
    assert second.headers["X-Cache"] in _declared_headers(doc, ok)["X-Cache"]["schema"]["enum"]
    bad = await gw.get("/v1/posthog/projects/1/notebooks?limit=0")
    assert bad.status == 400 and "X-Request-ID" in bad.headers
    assert "Retry-After" in _declared_headers(doc, doc["paths"][listing]["get"]["responses"]["503"])

    # 503 with Retry-After: PostHog throttling, passed on (the cache is off: every call reaches it)
    plain = await make_gateway()
    sandboxes.posthog_state.rate_limit_per_minute = 1
    answers = [await plain.get("/v1/posthog/projects/1/notebooks?limit=1") for _ in range(2)]
    throttled = answers[-1]
    assert throttled.status == 503 and throttled.headers["Retry-After"].isdigit()
    assert "X-Request-ID" in throttled.headers
    sandboxes.posthog_state.rate_limit_per_minute = None

    # 429 with Retry-After: declared once a key has a rate limit, and sent
    keyed = await make_gateway(ROUTES.read_text() + KEYED, env={**sandbox_env, "READER_KEY": READER})
    keyed_doc = await (await keyed.get("/openapi.json")).json()
    too_many = keyed_doc["paths"][listing]["get"]["responses"]["429"]
    assert {"Retry-After", "X-Request-ID"} <= set(_declared_headers(keyed_doc, too_many))
    assert "429" not in doc["paths"][listing]["get"]["responses"]  # no limit configured: never a 429
    key = {"X-API-Key": READER}
    assert (await keyed.get("/v1/observable/notebooks?limit=1", headers=key)).status == 200
    limited = await keyed.get("/v1/observable/notebooks?limit=1", headers=key)
    assert limited.status == 429 and limited.headers["Retry-After"].isdigit() and "X-Request-ID" in limited.headers


async def test_a_generated_client_makes_a_conditional_call(
    gw: TestClient[Any, Any],
    sandboxes: Sandboxes,
    generated: ModuleType,
) -> None:
    read = importlib.import_module("rg_client.api.posthog.posthog_notebook")
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    async with generated.Client(base_url=str(gw.make_url("")).rstrip("/")) as client:
        first = await read.asyncio_detailed("1", short_id, client=client)
        assert first.status_code == 200 and first.parsed is not None and first.parsed.id == short_id
        etag = first.headers["ETag"]
        kept = await read.asyncio_detailed("1", short_id, client=client, if_none_match=etag)
        assert kept.status_code == 304 and kept.parsed is None and kept.content == b""
        assert kept.headers["ETag"] == etag
