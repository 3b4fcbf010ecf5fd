"""Pagination: the survivors ``make mutants`` (group ``pagination``) found, each killed here.

The cursor checks are tested directly (the strict checks are a pure function of the decoded
cursor, and ``tests/test_cursor.py`` shows the same refusals through HTTP); the walks are
driven through real HTTP against a scriptable origin on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict
from yarl import URL

from gateway.config import Config, Route, load_config
from gateway.errors import BadRequest
from gateway.mapping import ShapeDrift
from gateway.pagination import stale
from gateway.pagination.common import Answer, Position, fingerprint
from gateway.pagination.cursor import MAX_CURSOR_CHARS, _sign, binding, decode_cursor, derive_key, encode_cursor
from gateway.pagination.next_url import NextLinks
from gateway.server import GATEWAY

SECRET = derive_key("test-cursor-key", [])

CURSOR_ROUTES = """
upstreams:
  u: {base_url: "http://127.0.0.1:9"}
routes:
  single:
    stable: GET /v1/single
    upstream: u
    auth: none
    pagination: {style: before, param: before, field: t}
    targets: ["GET /s"]
  typed:
    stable: GET /v1/typed
    upstream: u
    auth: none
    params: {type: {enum: [a, b], fan_out: true}}
    pagination: {style: before, param: before, field: t}
    targets: ["GET /s?type={type}"]
  wide:
    stable: GET /v1/wide
    upstream: u
    auth: none
    params: {type: {enum: [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q], fan_out: true}}
    pagination: {style: before, param: before, field: t}
    targets: ["GET /s?type={type}"]
  open:
    stable: GET /v1/open
    upstream: u
    auth: none
    params: {type: {fan_out: true}}
    pagination: {style: before, param: before, field: t}
    targets: ["GET /s?type={type}"]
  offset:
    stable: GET /v1/offset
    upstream: u
    auth: none
    pagination: {style: offset}
    targets: ["GET /o"]
  page:
    stable: GET /v1/page
    upstream: u
    auth: none
    pagination: {style: page}
    targets: ["GET /p"]
  token:
    stable: GET /v1/token
    upstream: u
    auth: none
    pagination: {style: cursor, token: next}
    targets: ["GET /t"]
  link:
    stable: GET /v1/link
    upstream: u
    auth: none
    pagination: {style: next_url, next: next}
    targets: ["GET /l"]
"""


def _config(text: str) -> Config:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "routes.yaml"
        path.write_text(text)
        return load_config(path)


ROUTES: dict[str, Route] = {r.name: r for r in _config(CURSOR_ROUTES).routes}


def _signed(payload: Any) -> str:
    """A cursor as one holding the key would make it (the checks must hold even then)."""
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"{body}.{_sign(SECRET, body)}"


def _accepted(route: str, payload: Any) -> tuple[list[str], Position]:
    return decode_cursor(ROUTES[route], _signed(payload), SECRET, {})


def _refused(route: str, payload: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        _accepted(route, payload)
    assert caught.value.code == "bad_cursor" and caught.value.route == route


MARK = "0123456789abcdef"


# --------------------------------------------------------------------------- cursor checks


def test_a_cursor_names_its_route_and_only_known_fields() -> None:
    """Survivors in ``_checked``'s first checks: the payload's type, its field names, its route."""
    streams, position = _accepted("single", {"r": "single", "p": {"": 5}})
    assert streams == [""] and position == Position({"": 5}, set(), {})
    streams, position = _accepted("single", {"r": "single", "p": {"": 5}, "e": [""], "m": {"f": MARK, "h": MARK}})
    assert position == Position({"": 5}, {""}, {"f": MARK, "h": MARK})
    for payload in (
        [{"r": "single", "p": {"": 5}}],
        {"r": "single", "p": {"": 5}, "x": 1},
        {"r": "typed", "p": {"": 5}},
        {"p": {"": 5}},
        {"r": "single"},
        {"r": "single", "p": [5]},
        {"r": "single", "p": {"": 5}, "e": ""},
        {"r": "single", "p": {"": 5}, "e": {}},
        {"r": "single", "p": {"": 5}, "m": []},
    ):
        _refused("single", payload)


def test_a_cursor_walks_only_the_streams_its_route_has() -> None:
    """Survivors in the stream checks: one unnamed stream without a fan-out; with one, names from
    its enum (all of them allowed) or, without an enum, 1 to 16 names of 1 to 100 characters."""
    for payload in ({"": 1, "a": 1}, {"a": 1}, {}):
        _refused("single", {"r": "single", "p": payload})
    assert _accepted("typed", {"r": "typed", "p": {"a": 1, "b": 2}})[0] == ["a", "b"]
    assert _accepted("typed", {"r": "typed", "p": {"b": None}})[0] == ["b"]
    for payload in ({}, {"c": 1}, {"a": 1, "c": 1}, {"": 1}):
        _refused("typed", {"r": "typed", "p": payload})
    seventeen = {name: 1 for name in "abcdefghijklmnopq"}  # an enum longer than 16 allows all of it
    assert _accepted("wide", {"r": "wide", "p": seventeen})[0] == list(seventeen)
    sixteen = {f"s{i}": 1 for i in range(16)}
    assert _accepted("open", {"r": "open", "p": sixteen})[0] == list(sixteen)
    _refused("open", {"r": "open", "p": {**sixteen, "s16": 1}})
    assert _accepted("open", {"r": "open", "p": {"x" * 100: 1}})[0] == ["x" * 100]
    for payload in ({"x" * 101: 1}, {"": 1}, {}):
        _refused("open", {"r": "open", "p": payload})


def test_a_cursor_ends_only_streams_it_walks_once_each() -> None:
    """Survivors in the ``ended`` check."""
    assert _accepted("typed", {"r": "typed", "p": {"a": 1, "b": 2}, "e": ["b"]})[1].ended == {"b"}
    assert _accepted("typed", {"r": "typed", "p": {"a": 1, "b": 2}, "e": []})[1].ended == set()
    for ended in (["c"], [1], ["a", "a"], [None]):
        _refused("typed", {"r": "typed", "p": {"a": 1, "b": 2}, "e": ended})


def test_a_cursor_marks_are_two_known_fingerprints() -> None:
    """Survivors in the marks check and ``_is_hex``: only ``f`` and ``h``, each 16 lowercase hex digits."""
    assert _accepted("single", {"r": "single", "p": {"": 1}, "m": {"h": MARK}})[1].marks == {"h": MARK}
    for marks in (
        {"x": MARK},
        {"f": MARK[:-1]},
        {"f": MARK + "0"},
        {"f": MARK.upper()},
        {"f": "g" * 16},
        {"f": "X" * 16},
        {"f": 1234567890123456},
        {"f": MARK, "h": "nope"},
    ):
        _refused("single", {"r": "single", "p": {"": 1}, "m": marks})


@pytest.mark.parametrize(
    ("route", "good", "bad"),
    [
        ("single", [None, 0, -5, 1.5, "t" * 2048], [True, "t" * 2049, [], {}]),
        ("offset", [None, 0, 10**12], [-1, 10**12 + 1, True, "3", 1.5]),
        (
            "page",
            [{"t": None, "s": 0}, {"t": 1, "s": 100_000}, {"t": 10**9, "s": 3}, {"t": 0, "s": 0}],
            [
                {"t": 10**9 + 1, "s": 0},
                {"t": -1, "s": 0},
                {"t": "2", "s": 0},
                {"t": True, "s": 0},
                {"t": 1, "s": 100_001},
                {"t": 1, "s": -1},
                {"t": 1, "s": False},
                {"t": 1},
                {"t": 1, "s": 0, "x": 0},
                None,
                5,
            ],
        ),
        (
            "token",
            [{"t": "abc", "s": 0}, {"t": "t" * 2048, "s": 1}, {"t": None, "s": 0}],
            [{"t": "", "s": 0}, {"t": "t" * 2049, "s": 0}, {"t": 5, "s": 0}, {"t": "/x", "s": 100_001}],
        ),
        (
            "link",
            [{"t": "/l?page=2", "s": 0}, {"t": None, "s": 0}],
            [{"t": "//evil.example/l", "s": 0}, {"t": "http://evil.example/l", "s": 0}, {"t": "l", "s": 0}],
        ),
    ],
)
def test_a_cursor_position_has_its_styles_type_and_bounds(route: str, good: list[Any], bad: list[Any]) -> None:
    """Survivors in ``_value_ok`` and ``_is_count``: per style, the position's type and bounds."""
    for value in good:
        assert _accepted(route, {"r": route, "p": {"": value}})[1].pos == {"": value}, value
    for value in bad:
        _refused(route, {"r": route, "p": {"": value}})


def test_a_cursor_is_one_body_and_one_signature() -> None:
    """Survivor: the cursor split at its last ``.`` (a signed body holding a ``.`` accepted)."""
    raw = json.dumps({"r": "single", "p": {"": 5}})
    raw += " " * (-len(raw) % 3)  # no padding: a decoder skipping the "." would read the payload
    payload = base64.urlsafe_b64encode(raw.encode()).decode()
    dotted = payload + "."
    text = f"{dotted}.{_sign(SECRET, dotted)}"
    with pytest.raises(BadRequest):
        decode_cursor(ROUTES["single"], text, SECRET, {})
    assert decode_cursor(ROUTES["single"], f"{payload}.{_sign(SECRET, payload)}", SECRET, {})[1].pos == {"": 5}


def test_a_cursor_up_to_the_longest_issued_is_read() -> None:
    """Survivor: ``len(text) > MAX_CURSOR_CHARS`` → ``>=`` (a cursor of exactly 4096 characters)."""
    # base64 of n bytes has ceil(4n/3) characters, plus "." and a 24-character signature; two
    # streams, as no one position may be longer than 2048 characters
    def payload(n: int) -> dict[str, Any]:
        return {"r": "open", "p": {"a": "t" * min(n, 2048), "b": "t" * max(n - 2048, 0)}}

    filler = 2048
    while len(_signed(payload(filler))) < MAX_CURSOR_CHARS:
        filler += 1
    text = _signed(payload(filler))
    assert len(text) == MAX_CURSOR_CHARS
    assert decode_cursor(ROUTES["open"], text, SECRET, {})[1].pos == payload(filler)["p"]
    longer = _signed(payload(filler + 1))
    assert len(longer) > MAX_CURSOR_CHARS
    with pytest.raises(BadRequest):
        decode_cursor(ROUTES["open"], longer, SECRET, {})


# --------------------------------------------------------------------------- the cursor format


def test_the_key_and_cursor_format_stay_what_earlier_versions_issued() -> None:
    """Survivors in ``derive_key``, ``_b64`` and ``encode_cursor``: replicas of two versions of the
    gateway (a rolling upgrade) must read each other's cursors, so the key derivation and the
    encoding are fixed; these are known answers computed by the released code."""
    assert derive_key("k", []).hex()[:32] == KNOWN_CONFIGURED_KEY
    assert derive_key(None, ["b", "a"]).hex()[:32] == KNOWN_DERIVED_KEY
    assert derive_key(None, ["a", "b"]) == derive_key(None, ["b", "a"])  # the order of the secrets is not
    assert derive_key(None, ["ab"]) != derive_key(None, ["a", "b"])
    assert derive_key("a", []) != derive_key(None, ["a"])
    assert derive_key("", ["a"]) == derive_key(None, ["a"])  # an empty configured key is none
    position = Position({"a": 5, "b": None}, {"b"}, {"h": MARK, "f": MARK})
    cursor = encode_cursor(ROUTES["typed"], ["a", "b"], position, SECRET, {})
    assert cursor == KNOWN_CURSOR
    decoded = Position({"a": 5, "b": None}, {"b"}, position.marks)
    assert decode_cursor(ROUTES["typed"], cursor, SECRET, {}) == (["a", "b"], decoded)
    unmarked = encode_cursor(ROUTES["single"], [None], Position({"": 7}), SECRET, {})
    assert unmarked is not None and json.loads(base64.urlsafe_b64decode(unmarked.partition(".")[0] + "==")) == {
        "r": "single",
        "p": {"": 7},
        "e": [],
        "g": stale.fingerprint(ROUTES["single"]),
    }
    # a cursor the version before route fingerprints issued (no "g") is still read, checked strictly
    assert decode_cursor(ROUTES["typed"], KNOWN_CURSOR_BEFORE_G, SECRET, {}) == (["a", "b"], decoded)
    assert encode_cursor(ROUTES["typed"], ["a", "b"], Position({"a": 1}, {"a", "b"}), SECRET, {}) is None
    # a signature ending in "X" (one in 64) is issued whole
    assert encode_cursor(ROUTES["single"], [None], Position({"": 15}), SECRET, {}) == KNOWN_CURSOR_X
    # cursors carry no base64 padding, whatever their length, and read back as issued
    for n in range(40):
        issued = encode_cursor(ROUTES["single"], [None], Position({"": "x" * n}), SECRET, {})
        assert issued is not None and "=" not in issued
        assert decode_cursor(ROUTES["single"], issued, SECRET, {})[1].pos == {"": "x" * n}


def test_item_fingerprints_stay_what_earlier_versions_computed() -> None:
    """Survivors in ``fingerprint``: cursors carry fingerprints of items (the stall marks), so the
    digest of an item must not depend on the order of its keys, nor change between versions."""
    item = {"b": 1, "a": [1, "x"], "c": {"e": None, "d": 2.5}}
    assert fingerprint(item) == KNOWN_FINGERPRINT
    assert fingerprint({"c": {"d": 2.5, "e": None}, "a": [1, "x"], "b": 1}) == KNOWN_FINGERPRINT


#: computed by the code of this commit: a change here breaks every cursor issued before it
KNOWN_FINGERPRINT = "8b36ab2ea56121a7"
#: (the cursors since they carry the route's paging fingerprint "g": gateway.pagination.stale)
KNOWN_CURSOR_X = (
    "eyJyIjoic2luZ2xlIiwicCI6eyIiOjE1fSwiZSI6W10sImciOiJkMjkxYjc2NDFjNjg4NGUwIn0.YtvuPcRpfh6uLUE8IpxyUOEX"
)
KNOWN_CONFIGURED_KEY = "2e7e9a84b0079fcd0fb7e7ba6252f720"
KNOWN_DERIVED_KEY = "a0ac65b42e8e4fb4b35e8d0f7a6407c6"
KNOWN_CURSOR_BEFORE_G = (
    "eyJyIjoidHlwZWQiLCJwIjp7ImEiOjUsImIiOm51bGx9LCJlIjpbImIiXSwibSI6eyJmIjoiMDEyMzQ1Njc4OWFiY2RlZiIsImgi"
    "OiIwMTIzNDU2Nzg5YWJjZGVmIn19.7FAmyXMshAv5mvoMBfki-YgK"
)
KNOWN_CURSOR = (
    "eyJyIjoidHlwZWQiLCJwIjp7ImEiOjUsImIiOm51bGx9LCJlIjpbImIiXSwiZyI6Ijk1ZGQyNDRkZjJkNWZhOWIiLCJtIjp7ImYi"
    "OiIwMTIzNDU2Nzg5YWJjZGVmIiwiaCI6IjAxMjM0NTY3ODlhYmNkZWYifX0.-0kVO-Ty4CRQAcTxOzh98lg9"
)


# --------------------------------------------------------------------------- walks, through HTTP

WALKS = """
upstreams:
  origin:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
routes:
  streams:
    stable: GET /v1/streams/{variant}
    upstream: origin
    auth: none
    pagination: {style: before, param: before, field: t, items: items}
    targets: ["GET /streams/{variant}"]
  tokens:
    stable: GET /v1/tokens/{variant}
    upstream: origin
    auth: none
    pagination: {style: cursor, token: next, items: results}
    targets: ["GET /tokens/{variant}"]
  tokens_more:
    stable: GET /v1/tokens-more/{variant}
    upstream: origin
    auth: none
    pagination: {style: cursor, token: next, has_more: more, items: results}
    targets: ["GET /tokens/{variant}"]
  links:
    stable: GET /v1/links/{variant}
    upstream: origin
    auth: none
    pagination: {style: next_url, next: next, items: results}
    targets: ["GET /links/{variant}"]
"""


class Origin:
    """Pages that go wrong in one way each (the variant in the path says which)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/streams/{variant}", self.streams)
        app.router.add_get("/tokens/{variant}", self.tokens)
        app.router.add_get("/links/{variant}", self.links)
        return app

    def _saw(self, request: web.Request) -> str:
        self.seen.append((request.path, request.query_string))
        return request.match_info["variant"]

    async def streams(self, request: web.Request) -> web.Response:
        """``before`` over 9, 8, 7, ... two a page; ``mixed`` turns to text values after 6;
        ``nofield``/``text`` have items without a ``t``."""
        variant = self._saw(request)
        raw = request.query.get("before", "1000")
        before = int(raw) if raw.isdigit() else 1000
        items: list[Any] = [{"t": t} for t in range(9, 3, -1) if t < before][:2]
        if variant == "mixed" and before <= 6:
            items = [{"t": "b"}, {"t": "a"}]
        elif variant == "nofield":
            items = [{"t": 9}, {"x": 1}]
        elif variant == "text":
            items = ["a text item"]
        return web.json_response({"items": items})

    async def tokens(self, request: web.Request) -> web.Response:
        """``empty``: a second page with no items; ``true``/``list``: a next token that is no token."""
        variant = self._saw(request)
        if variant == "empty":
            first = "cursor" not in request.query
            return web.json_response({"results": [{"id": 0}] if first else [], "next": "t1" if first else None})
        if variant == "emptymore":  # an empty page that still names a next token: the end all the same
            first = "cursor" not in request.query
            return web.json_response({"results": [{"id": 0}] if first else [], "next": "t1" if first else "t2"})
        if variant == "lag":  # t2 answers t1's page again (an upstream going back one page)
            asked = request.query.get("cursor", "t0")
            page = {"t0": 0, "t1": 1, "t2": 1}[asked]
            return web.json_response({"results": [{"id": page}], "next": {"t0": "t1", "t1": "t2", "t2": "t3"}[asked]})
        token: Any = {"true": True, "list": ["t1"], "number": 7}[variant]
        page = int(request.query.get("cursor", "0"))
        return web.json_response({"results": [{"id": page}], "next": token if page < 7 else None})

    async def links(self, request: web.Request) -> web.Response:
        """``missing``: no ``next`` field at all; ``number``: a next that is no link."""
        variant = self._saw(request)
        body: dict[str, Any] = {"results": [{"id": 1}]}
        if variant == "number":
            body["next"] = 5
        return web.json_response(body)


async def _walks(make_gateway: Any, aiohttp_server: Any) -> tuple[TestClient[Any, Any], Origin]:
    origin = Origin()
    server: TestServer = await aiohttp_server(origin.app())
    gw = await make_gateway(WALKS, env={"ORIGIN_URL": str(server.make_url(""))})
    return gw, origin


async def _answer(gw: TestClient[Any, Any], url: str) -> tuple[int, dict[str, Any]]:
    resp = await gw.get(url)
    body: dict[str, Any] = await resp.json()
    return resp.status, body


async def test_an_item_without_its_paging_field_is_drift(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors in ``before._field``: an item lacking the field, or not an object at all, is a 502
    ``shape_drift`` naming the field (not a 500)."""
    gw, _ = await _walks(make_gateway, aiohttp_server)
    for variant in ("nofield", "text"):
        status, body = await _answer(gw, f"/v1/streams/{variant}?all=true")
        assert status == 502, body
        assert body["error"] == {
            "code": "shape_drift",
            "message": "upstream item lost its paging field 't'",
            "route": "streams",
        }


async def test_before_values_that_cannot_be_compared(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors in ``before.walk``: a ``before`` value the upstream's cannot be compared with is
    the cursor's fault (400 ``bad_cursor``) while the stream is still at the cursor's value, and
    the upstream's (502 ``pagination_stalled``) once a page of its own moved it."""
    gw, _ = await _walks(make_gateway, aiohttp_server)
    status, body = await _answer(gw, "/v1/streams/ints?all=true")
    assert status == 200 and [it["t"] for it in body["items"]] == [9, 8, 7, 6, 5, 4]
    # the upstream switches from numbers to text on its third page: never served, a 502
    status, body = await _answer(gw, "/v1/streams/mixed?all=true")
    assert status == 502 and body["error"]["code"] == "pagination_stalled", body
    # the same, resumed from a cursor: its first page (numbers) moved the stream on, so still the upstream's
    status, body = await _answer(gw, "/v1/streams/mixed?limit=2")
    assert status == 200 and body["next_cursor"]
    status, body = await _answer(gw, f"/v1/streams/mixed?all=true&cursor={body['next_cursor']}")
    assert status == 502 and body["error"]["code"] == "pagination_stalled", body
    # a cursor (signed with the deployment's key) whose value is text: numbers cannot follow it
    server: Any = gw.server
    runtime = server.app[GATEWAY].runtime
    secret = runtime.proxy.cursor_secret
    bound = binding(next(r for r in runtime.config.routes if r.name == "streams"), {"variant": "ints"}, 0)
    raw = json.dumps({"r": "streams", "p": {"": "zzz"}, "a": bound}).encode()
    body64 = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    forged = f"{body64}.{_sign(secret, body64)}"
    status, body = await _answer(gw, f"/v1/streams/ints?cursor={forged}")
    assert status == 400, body
    assert body["error"] == {
        "code": "bad_cursor",
        "message": "the cursor is not valid for this route; pass next_cursor exactly as it was returned",
        "route": "streams",
    }


async def test_an_empty_page_ends_a_token_walk(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors in ``linked.walk``: the first item of an empty page looked up (a 500); the next
    token of an empty page followed."""
    gw, origin = await _walks(make_gateway, aiohttp_server)
    for variant in ("empty", "emptymore"):
        status, body = await _answer(gw, f"/v1/tokens/{variant}?all=true")
        assert (status, body) == (200, {"items": [{"id": 0}], "next_cursor": None}), variant
    assert [q for p, q in origin.seen] == ["", "cursor=t1", "", "cursor=t1"]


async def test_a_page_repeating_the_one_before_is_noticed_across_cursors(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """Survivor in ``linked.walk``: the cursor's mark of the previous page's first item (``h``) no
    longer that item's, so an upstream answering the previous page again is served twice."""
    gw, _ = await _walks(make_gateway, aiohttp_server)
    status, body = await _answer(gw, "/v1/tokens/lag?limit=1")
    assert status == 200 and body["items"] == [{"id": 0}]
    status, body = await _answer(gw, f"/v1/tokens/lag?limit=1&cursor={body['next_cursor']}")
    assert status == 200 and body["items"] == [{"id": 1}]
    status, body = await _answer(gw, f"/v1/tokens/lag?limit=1&cursor={body['next_cursor']}")
    assert status == 502 and body["error"]["code"] == "pagination_stalled", body


async def test_a_next_token_must_be_text_or_a_number(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor in ``Tokens.advance``: ``true`` or a list read as a token (sent back as ``True``)."""
    gw, origin = await _walks(make_gateway, aiohttp_server)
    for variant in ("true", "list"):
        status, body = await _answer(gw, f"/v1/tokens/{variant}?all=true")
        assert (status, body) == (200, {"items": [{"id": 0}], "next_cursor": None}), variant
    status, body = await _answer(gw, "/v1/tokens/number?all=true")
    assert status == 200 and body["items"] == [{"id": 0}, {"id": 7}]
    assert [q for p, q in origin.seen] == ["", "", "", "cursor=7"]
    # a declared has_more the page leaves out says nothing: the token decides
    status, body = await _answer(gw, "/v1/tokens-more/number?all=true")
    assert status == 200 and body["items"] == [{"id": 0}, {"id": 7}]


async def test_a_next_link_field_is_required_and_must_be_a_link(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors in ``NextLinks.advance``: a declared ``next`` field missing from the page is the
    upstream changing how it pages (502), and a ``next`` that is no string ends the walk."""
    gw, origin = await _walks(make_gateway, aiohttp_server)
    status, body = await _answer(gw, "/v1/links/missing?all=true")
    assert status == 502 and body["error"]["code"] == "shape_drift", body
    assert body["error"]["message"] == "upstream page has no 'next' field (its pagination changed?)"
    status, body = await _answer(gw, "/v1/links/number?all=true")
    assert (status, body) == (200, {"items": [{"id": 1}], "next_cursor": None})
    assert [p for p, _ in origin.seen] == ["/links/missing", "/links/number"]


# --------------------------------------------------------------------------- next links


def _links(base: str) -> NextLinks:
    return NextLinks(ROUTES["link"].pagination, URL(base), "link")  # type: ignore[arg-type]


def test_a_next_link_is_kept_as_the_path_below_the_base() -> None:
    """Survivors in ``after_origin`` and ``NextLinks.__init__``: the default port written or not
    is the same origin; a link without a query gets no ``?``; the base path is cut whole; a link
    that is no URL is refused like one to another origin."""
    links = _links("http://up.example/INDEX/")
    here = URL("http://up.example/INDEX/list")
    assert links.after_origin("http://up.example:80/INDEX/list?page=2", here) == "/list?page=2"
    assert links.after_origin("/INDEX/list/next", here) == "/list/next"
    assert _links("http://up.example:80/api/").after_origin("http://up.example/api/x", here) == "/x"
    for bad in ("http://up.example:99999/INDEX/x", "http://other.example/INDEX/x", "/elsewhere/x"):
        with pytest.raises(ShapeDrift) as caught:
            links.after_origin(bad, here)
        assert caught.value.code == "pagination_bad_link", bad


def test_the_next_link_header_may_come_first_of_several_lines() -> None:
    """Survivor in ``_header_link``: several ``Link`` lines joined with something other than ``, ``
    (a bare ``rel=next`` on the first line then lost)."""
    pag = ROUTES["link"].pagination
    assert pag is not None
    links = NextLinks(replace(pag, next_path=()), URL("http://up.example/api/"), "link")
    headers = CIMultiDict([("Link", "</api/x?page=2>; rel=next"), ("Link", "</api/x?page=0>; rel=prev")])
    answer = Answer({"results": [1]}, headers, URL("http://up.example/api/x"))
    assert links.advance(None, answer, [1]) == "/x?page=2"


# --------------------------------------------------------------------------- offset walks

OFFSETS = """
upstreams:
  origin:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
routes:
  offsets:
    stable: GET /v1/offsets/{variant}
    upstream: origin
    auth: none
    pagination: {style: offset, items: results, page_size: 3}
    targets: ["GET /offsets/{variant}"]
    response: {items: {id: id}}
  enveloped:
    stable: GET /v1/enveloped
    upstream: origin
    auth: none
    pagination: {style: offset, items: data.results, next: data.next, count: data.count, page_size: 3}
    targets: ["GET /offsets/envelope"]
    response: {items: {id: id}}
  flat:
    stable: GET /v1/flat
    upstream: origin
    auth: none
    pagination: {style: offset, items: data.results, page_size: 3}
    targets: ["GET /offsets/flat"]
  rooted:
    stable: GET /v1/rooted
    upstream: origin
    auth: none
    pagination: {style: offset, items: "", page_size: 3}
    targets: ["GET /offsets/rooted"]
"""


class Offsets:
    """limit/offset pages of at most 3 over ids 0..6 (7 items), each variant wrong in one way."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/offsets/{variant}", self.page)
        return app

    async def page(self, request: web.Request) -> web.Response:
        variant = request.match_info["variant"]
        self.seen.append((variant, request.query_string))
        offset, limit = int(request.query["offset"]), min(int(request.query["limit"]), 3)
        total = 7
        start = offset
        # the offset ignored, or from the third page (asked from the item before it, 5) on the first page again
        if variant in ("ignore", "capignore") or (variant == "restart" and offset >= 5):
            start = 0
        elif variant == "lag" and offset >= 5:  # the page before (asked from 2), again
            start = 2
        ids = list(range(total))[start : start + limit]
        if variant in ("capempty", "emptycount") and offset >= 2:
            ids = []
        if variant == "ignorecount":
            ids = [0, 1, 2][:limit]
        more = offset + limit < total
        body: dict[str, Any] = {"results": [{"id": i} for i in ids], "next": "more" if more else None}
        if variant == "grown":  # the count (6) is from before the collection grew to 7
            body["count"] = 6
        elif variant == "stale":  # says 7 but its first page already says there is no next one
            body["count"], body["next"] = 7, None
        elif variant == "text":
            body["count"] = "7"
        elif variant in ("ignorecount", "emptycount"):
            body["count"] = total
        elif variant == "flat":  # an envelope whose data is no object
            body = {"data": "maintenance"}
        elif variant == "none":
            body = {"results": [], "next": None, "count": 0}
        elif variant == "nonext":
            del body["next"]
        elif variant == "envelope":  # next and count one level down
            body = {"data": {**body, "count": total}}
        return web.json_response(body)


async def _offsets(make_gateway: Any, aiohttp_server: Any) -> tuple[TestClient[Any, Any], Offsets]:
    origin = Offsets()
    server: TestServer = await aiohttp_server(origin.app())
    gw = await make_gateway(OFFSETS, env={"ORIGIN_URL": str(server.make_url(""))})
    return gw, origin


async def _ids(gw: TestClient[Any, Any], url: str) -> tuple[int, list[int] | dict[str, Any], str | None]:
    status, body = await _answer(gw, url)
    if status != 200:
        return status, body["error"], None
    return status, [it["id"] for it in body["items"]], body["next_cursor"]


async def test_an_offset_walk_reads_its_count_and_next_as_declared(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors in ``offset.walk``: dotted ``next``/``count`` keys, a count that is not a number,
    a count that grew (the rest followed by ``next``), a count the first page's ``next`` belies, an
    empty collection, and a page without its ``next`` field."""
    gw, origin = await _offsets(make_gateway, aiohttp_server)
    assert await _ids(gw, "/v1/enveloped?all=true") == (200, list(range(7)), None)
    for variant in ("text", "grown"):
        assert await _ids(gw, f"/v1/offsets/{variant}?all=true") == (200, list(range(7)), None), variant
    assert [q for v, q in origin.seen if v == "grown"] == [  # each after the first from the item before it
        "limit=3&offset=0",
        "limit=3&offset=2",
        "limit=3&offset=4",
    ]
    # a page that contradicts its own count (no next page though the count says more) is drift
    status, error, _ = await _ids(gw, "/v1/offsets/stale?all=true")
    assert status == 502 and error == {
        "code": "shape_drift",
        "message": "upstream page contradicts itself: it has no next page after 3 items though its count is 7",
        "route": "offsets",
    }
    assert await _ids(gw, "/v1/offsets/none?all=true") == (200, [], None)
    assert await _ids(gw, "/v1/offsets/none?limit=5") == (200, [], None)
    for url, where in (("/v1/flat?all=true", "data.results"), ("/v1/rooted?all=true", "the body")):
        status, error, _ = await _ids(gw, url)
        assert status == 502 and error == {
            "code": "shape_drift",
            "message": f"upstream page has no list at {where!r}",
            "route": url[4:].partition("?")[0],
        }, url
    # with the count known, the rest is fetched at once: pages ignoring the offset are still
    # caught, and an empty page among them (the item before it gone) is the list moving: 409
    status, error, _ = await _ids(gw, "/v1/offsets/ignorecount?all=true")
    assert status == 502 and isinstance(error, dict) and error["code"] == "pagination_stalled", error
    status, error, _ = await _ids(gw, "/v1/offsets/emptycount?all=true")
    assert status == 409 and isinstance(error, dict) and error["code"] == "collection_changed", error
    status, error, _ = await _ids(gw, "/v1/offsets/nonext?all=true")
    assert status == 502 and error == {
        "code": "shape_drift",
        "message": "upstream page has no 'next' field (its pagination changed?)",
        "route": "offsets",
    }


async def test_an_offset_walk_stops_an_upstream_ignoring_the_offset(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors in ``offset.walk``'s stall checks: within one stable page filled from several
    capped upstream pages, and across cursors (from offset 1 on; the walk's first page; the page
    before the current one)."""
    gw, _ = await _offsets(make_gateway, aiohttp_server)
    status, error, _ = await _ids(gw, "/v1/offsets/capignore?limit=5")
    assert status == 502 and isinstance(error, dict) and error["code"] == "pagination_stalled", error
    # a capped page, then an empty one though `next` said more: the item served last is gone, a 409
    status, error, _ = await _ids(gw, "/v1/offsets/capempty?limit=5")
    assert status == 409 and isinstance(error, dict) and error["code"] == "collection_changed", error
    status, ids, cursor = await _ids(gw, "/v1/offsets/ignore?limit=1")
    assert (status, ids) == (200, [0]) and cursor
    # the second page is asked from offset 0 (the item before it): an upstream ignoring the offset
    # shows from the third on
    status, ids, cursor = await _ids(gw, f"/v1/offsets/ignore?limit=1&cursor={cursor}")
    assert (status, ids) == (200, [1]) and cursor
    status, error, _ = await _ids(gw, f"/v1/offsets/ignore?limit=1&cursor={cursor}")
    assert status == 502 and isinstance(error, dict) and error["code"] == "pagination_stalled", error
    for variant in ("restart", "lag"):
        status, ids, cursor = await _ids(gw, f"/v1/offsets/{variant}?limit=3")
        assert (status, ids) == (200, [0, 1, 2]) and cursor
        status, ids, cursor = await _ids(gw, f"/v1/offsets/{variant}?limit=3&cursor={cursor}")
        assert (status, ids) == (200, [3, 4, 5]) and cursor
        status, error, _ = await _ids(gw, f"/v1/offsets/{variant}?limit=3&cursor={cursor}")
        assert status == 502 and isinstance(error, dict) and error["code"] == "pagination_stalled", variant
