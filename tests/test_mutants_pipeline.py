"""The pipeline stages and the proxy's response side: the survivors ``make mutants`` (group
``pipeline``) found, each killed here through real HTTP: what the client gets back, and what the
upstream (a real aiohttp server on 127.0.0.1, tests/fake_upstream.py) was sent.

Each test's docstring names the mutants (the wrong changes) it catches.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from gateway.pipeline.conventions import compress_large
from tests.fake_upstream import CUT, FakeUpstream, Reply, start_fake
from tests.helpers.mutants import Origin
from tests.helpers.mutants import gateway as _mutants_gateway

YAML = """
server:
  max_body_bytes: 1KiB
  client_timeouts: {headers: 1s, body: 1s}
upstreams:
  origin:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
  keyed:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
    auth: {bearer: {env: ORIGIN_KEY}}
routes:
  thing:
    stable: GET /v1/things/{id}
    upstream: origin
    auth: none
    targets: ["GET /things/{id}"]
  create:
    stable: POST /v1/things
    upstream: origin
    auth: none
    targets: ["POST /things"]
  blank:
    stable: POST /v1/blank
    upstream: origin
    auth: none
    targets: [{request: "POST /blank", body: none}]
  listing:
    stable: GET /v1/listing
    upstream: origin
    auth: none
    targets: ["GET /listing"]
  shaped:
    stable: GET /v1/shaped
    upstream: origin
    auth: none
    targets: ["GET /shaped"]
    shape: {status: 200, content_type: application/json}
  moved:
    stable: GET /v1/moved
    upstream: origin
    auth: none
    targets: [{request: "GET /moved", redirect: report}]
    shape: {content_type: application/json}
    response: {item: {where: {location: '/(\\w+)$'}}}
  raw:
    stable: GET /v1/raw/{name}
    upstream: origin
    auth: none
    targets: ["GET /raw/{name}"]
    response: {raw: true, headers: {X-Name: {param: name}}}
  made:
    stable: POST /v1/made/{id}
    upstream: origin
    auth: none
    targets: ["POST /made/{id}"]
    response:
      status: 201
      headers: {Location: {param: id}, X-Gone: {field: gone, optional: true}}
      item: {id: {param: id}}
  passed:
    stable: POST /v1/passed
    upstream: origin
    auth: none
    targets: ["POST /passed"]
  emptied:
    stable: DELETE /v1/emptied/{id}
    upstream: origin
    auth: none
    targets: ["DELETE /emptied/{id}"]
    response: {status: 204, headers: {X-Deleted: {param: id}}}
  kept_raw:
    stable: GET /v1/kept-raw/{name}
    upstream: origin
    auth: none
    targets: ["GET /raw/{name}"]
    response: {raw: true}
    cache: {ttl: 60s}
  relative:
    stable: GET /v1/relative
    upstream: origin
    auth: none
    pagination: {style: next_url, items: results}
    targets: ["GET /list/rel"]
  secured:
    stable: GET /v1/secured
    upstream: keyed
    pagination: {style: cursor, token: next, items: results}
    targets: ["GET /secured"]
  listed:
    stable: GET /v1/listed
    upstream: origin
    auth: none
    pagination: {style: cursor, token: next, items: results}
    targets: ["GET /listed"]
"""

LIMIT = 1024
ORIGIN_KEY = "upstream-secret-" + "k" * 24


async def _gateway(
    make_gateway: Any, aiohttp_server: Any, yaml: str = YAML
) -> tuple[TestClient[Any, Any], FakeUpstream]:
    fake, _, base = await start_fake(aiohttp_server)
    gw = await make_gateway(yaml, env={"ORIGIN_URL": base, "ORIGIN_KEY": ORIGIN_KEY})
    return gw, fake


async def _error(resp: Any, status: int, code: str) -> dict[str, Any]:
    body = await resp.json()
    assert resp.status == status, body
    assert body["error"]["code"] == code, body
    err: dict[str, Any] = body["error"]
    return err


def _json_of_size(n: int) -> bytes:
    """A JSON object of exactly ``n`` bytes, as the gateway writes it again (no spaces)."""
    raw = b'{"a":"' + b"x" * (n - 8) + b'"}'
    assert len(raw) == n
    return raw


# --------------------------------------------------------------------------- body.py


async def test_a_body_of_exactly_the_limit_is_forwarded(make_gateway: Any, aiohttp_server: Any) -> None:
    """``content_length >= limit`` and ``size >= limit`` (413 at the limit itself), ``size = 1`` at the start."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    body = _json_of_size(LIMIT)
    resp = await gw.post("/v1/things", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert fake.hits[-1].body == body

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: only the reading loop counts
        yield body[:600]
        await asyncio.sleep(0.05)
        yield body[600:]

    resp = await gw.post("/v1/things", data=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert fake.count("/things") == 2 and fake.hits[-1].body == body


async def test_a_chunked_body_over_the_limit_is_413_however_it_arrives(make_gateway: Any, aiohttp_server: Any) -> None:
    """``size = len(chunk)`` (each piece under the limit, the whole over it)."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    body = _json_of_size(LIMIT + 200)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 400):
            yield body[start : start + 400]
            await asyncio.sleep(0.05)

    resp = await gw.post("/v1/things", data=chunks(), headers={"Content-Type": "application/json"})
    err = await _error(resp, 413, "payload_too_large")
    assert err["route"] == "create"
    assert fake.count() == 0


async def test_a_json_suffix_media_type_is_json(make_gateway: Any, aiohttp_server: Any) -> None:
    """``endswith("XX+jsonXX")`` / ``endswith("+JSON")``: application/merge-patch+json is JSON."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    resp = await gw.post("/v1/things", data=b'{"a": 1}', headers={"Content-Type": "application/merge-patch+json"})
    assert resp.status == 200, await resp.text()
    assert json.loads(fake.hits[-1].body) == {"a": 1}
    resp = await gw.post("/v1/things", data=b'{"a": 1}', headers={"Content-Type": "text/plain"})
    err = await _error(resp, 415, "unsupported_media_type")
    assert err["message"] == "send the body as application/json, not text/plain"
    assert fake.count() == 1


async def test_a_415_names_the_type_sent_and_a_charset_other_than_utf8_is_refused(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """The 415 quotes the media type the client wrote (aiohttp reads an unparsable or missing one as
    application/octet-stream, which the client never said); JSON in another charset is refused, not
    read as UTF-8; nothing is forwarded."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    for ctype, said in (
        ("application/json, text/plain", "'application/json, text/plain'"),
        (None, "an unspecified type"),
    ):
        headers = {} if ctype is None else {"Content-Type": ctype}
        resp = await gw.post("/v1/things", data=b'{"a": 1}', headers=headers, skip_auto_headers=["Content-Type"])
        err = await _error(resp, 415, "unsupported_media_type")
        assert err["message"] == f"send the body as application/json, not {said}"
    resp = await gw.post(
        "/v1/things", data='{"a": "é"}'.encode("latin-1"), headers={"Content-Type": "application/json; charset=latin-1"}
    )
    err = await _error(resp, 415, "unsupported_media_type")
    assert err["message"] == "send the body as UTF-8 (RFC 8259), not charset='latin-1'"
    assert fake.count() == 0
    unknown = {"Content-Type": "application/json; charset=nonsense"}
    await _error(await gw.post("/v1/things", data=b'{"a": 1}', headers=unknown), 415, "unsupported_media_type")
    assert fake.count() == 0
    for charset in ("utf-8", "UTF-8", "utf8", "utf_8", "us-ascii"):  # UTF-8 by any name, and ASCII (its first half)
        body = '{"a": "é"}'.encode()
        resp = await gw.post("/v1/things", data=body, headers={"Content-Type": f"application/json; charset={charset}"})
        assert resp.status == 200, await resp.text()
    assert json.loads(fake.hits[-1].body) == {"a": "é"}


async def test_a_passthrough_write_without_a_body_is_missing_body(make_gateway: Any, aiohttp_server: Any) -> None:
    """``_needs_body(None)``, the message or code dropped or changed, ``_needs_body`` with ``!=`` or
    another mode name, ``not in _BODY_METHODS``."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    for body in (b"", b"  \n"):
        resp = await gw.post("/v1/things", data=body, headers={"Content-Type": "application/json"})
        err = await _error(resp, 400, "missing_body")
        assert err["message"] == "POST /v1/things needs a JSON body (Content-Type: application/json)"
    assert fake.count() == 0


async def test_a_write_whose_target_takes_no_body_needs_none(make_gateway: Any, aiohttp_server: Any) -> None:
    """``_needs_body`` with ``or``: a target with ``body: none`` is called without one."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    resp = await gw.post("/v1/blank")
    assert resp.status == 200, await resp.text()
    assert fake.count("/blank") == 1 and fake.hits[-1].body == b""


async def test_a_json_null_body_forwards_no_body(make_gateway: Any, aiohttp_server: Any) -> None:
    """``None if (parsed is None) and False``: a body that parses to nothing sends nothing."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    resp = await gw.post("/v1/things", data=b"null", headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert fake.hits[-1].body == b""


async def test_bad_json_bodies_say_what_is_wrong(make_gateway: Any, aiohttp_server: Any) -> None:
    """json_too_deep: message or code dropped or changed; malformed_json: where it broke (``where =
    None``, ``and False``, ``or True``, ``else "XXXX"``)."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    deep = b"[" * 1100 + b"]" * 1100
    resp = await gw.post("/v1/things", data=deep, headers={"Content-Type": "application/json"})
    # over 1 KiB: the limit first
    await _error(resp, 413, "payload_too_large")
    yaml = YAML.replace("max_body_bytes: 1KiB", "max_body_bytes: 8KiB")
    gw, fake = await _gateway(make_gateway, aiohttp_server, yaml)
    resp = await gw.post("/v1/things", data=deep, headers={"Content-Type": "application/json"})
    err = await _error(resp, 400, "json_too_deep")
    assert err["message"] == "the body is JSON nested deeper than 1024 levels"
    assert err["route"] == "create"
    resp = await gw.post("/v1/things", data=b'{"a": }', headers={"Content-Type": "application/json"})
    err = await _error(resp, 400, "malformed_json")
    assert err["message"] == "the body is not valid JSON at line 1 column 7"
    resp = await gw.post("/v1/things", data=b'{"a": NaN}', headers={"Content-Type": "application/json"})
    err = await _error(resp, 400, "malformed_json")
    assert err["message"] == "the body is not valid JSON"
    assert fake.count() == 0


# --------------------------------------------------------------------------- conventions.py


async def test_if_none_match_lists_tags_without_spaces(make_gateway: Any, aiohttp_server: Any) -> None:
    """``if_none_match.split(None)``: ``"a",W/"b"`` is two tags, the second one ours."""
    gw, _ = await _gateway(make_gateway, aiohttp_server)
    first = await gw.get("/v1/things/1")
    etag = first.headers["ETag"]
    resp = await gw.get("/v1/things/1", headers={"If-None-Match": f'"other",{etag}'})
    assert resp.status == 304 and await resp.read() == b""
    assert resp.headers["ETag"] == etag


def _listed(k: int) -> bytes:
    return json.dumps({"results": [{"id": "x" * k}], "next": None}).encode()


async def test_an_all_answer_of_exactly_the_threshold_is_compressed(make_gateway: Any, aiohttp_server: Any) -> None:
    """``len(body) > COMPRESS_MIN_BYTES`` (1024 bytes is large enough), ``Vary: XXAccept-EncodingXX``."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    page = len(b'{"items":[{"id":""}],"next_cursor":null}')
    for size, compressed in ((1024, True), (1023, False)):
        fake.script("/listed", Reply(body=_listed(size - page)))
        resp = await gw.get("/v1/listed?all=true", headers={"Accept-Encoding": "gzip"})
        assert resp.status == 200
        assert len(await resp.read()) == size
        assert (resp.headers.get("Content-Encoding") == "gzip") is compressed, size
        vary = [v.strip() for v in resp.headers.get("Vary", "").split(",")]
        assert ("Accept-Encoding" in vary) is compressed, vary


def test_compression_adds_accept_encoding_to_a_vary_it_finds() -> None:
    """No route answer carries a ``Vary`` when it is compressed, so this has no HTTP surface: the
    ``Vary`` read as None or under another name, the ``elif`` inverted or misspelled, the merged
    value dropped or written under another name."""
    for before, after in (
        ("Origin", "Origin, Accept-Encoding"),
        ("Origin, Accept-Encoding", "Origin, Accept-Encoding"),
        ("origin, accept-encoding", "origin, accept-encoding"),
        ("Origin, ACCEPT-ENCODING", "Origin, ACCEPT-ENCODING"),
    ):
        resp = web.Response(body=b"x" * 2048, headers={"Vary": before})
        compress_large(make_mocked_request("GET", "/", headers={"Accept-Encoding": "gzip"}), resp)
        assert resp.headers.getall("Vary") == [after], before
        assert "XXVaryXX" not in resp.headers
    small = web.Response(body=b"x" * 10, headers={"Vary": "Origin"})
    compress_large(make_mocked_request("GET", "/", headers={"Accept-Encoding": "gzip"}), small)
    assert small.headers["Vary"] == "Origin"


# --------------------------------------------------------------------------- proxy/status.py


async def test_a_missing_entity_is_404_with_the_upstream_s_words(make_gateway: Any, aiohttp_server: Any) -> None:
    """``why = ""`` (a 404 without a probe sample stands), ``detail = None``, ``upstream_message(None)``,
    ``detail and "not found upstream"``, the fallback message changed."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    fake.script("/things/7", Reply(404, body=b'{"detail": "no thing 7 here"}'))
    err = await _error(await gw.get("/v1/things/7"), 404, "not_found")
    assert err["message"] == "no thing 7 here" and err["route"] == "thing"
    fake.script("/things/8", Reply(404, body=b"<html>nope</html>"))
    err = await _error(await gw.get("/v1/things/8"), 404, "not_found")
    assert err["message"] == "not found upstream"


async def test_a_gone_collection_names_the_target(make_gateway: Any, aiohttp_server: Any) -> None:
    """A 404 where no entity was named: the route is gone, and the message says where to look."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    fake.script("/listing", 404)
    err = await _error(await gw.get("/v1/listing"), 502, "upstream_route_gone")
    assert err["message"] == (
        "upstream 'origin' no longer serves GET /listing (404) - the upstream route may have moved; check routes.yaml"
    )


async def test_upstream_error_bodies_are_quoted_at_most_500_characters(make_gateway: Any, aiohttp_server: Any) -> None:
    """upstream_message: ``"message"``/``"error"`` keys misspelled, ``[:501]`` twice, ``or`` for an
    empty ``errors`` list, ``return "XXXX"`` for a body that is not JSON or has no message."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    failed = "upstream 'origin' failed with 500"
    cases = [
        (b'{"message": "disk full"}', f"{failed}: disk full"),
        (b'{"error": "quota"}', f"{failed}: quota"),
        (b'{"detail": "' + b"y" * 600 + b'"}', f"{failed}: {'y' * 500}"),
        (b'{"errors": [{"message": "' + b"z" * 600 + b'"}]}', f"{failed}: {'z' * 500}"),
        (b'{"errors": []}', failed),
        (b'{"other": "field"}', failed),
        (b"<html>oops</html>", failed),
        (b"", failed),
    ]
    for body, message in cases:
        fake.script("/things/1", Reply(500, body=body))
        err = await _error(await gw.get("/v1/things/1"), 502, "upstream_failed")
        assert err["message"] == message, body


async def _bare_origin(answers: dict[str, bytes]) -> tuple[asyncio.Server, str]:
    """An origin on a raw socket: each path answers the given raw HTTP response (no Content-Type
    unless it says one), which aiohttp's server would not send."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readuntil(b"\r\n")
            await reader.readuntil(b"\r\n\r\n")
            path = line.split(b" ")[1].decode().partition("?")[0]
            writer.write(answers[path])
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def _plain(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_the_declared_shape_is_checked_on_every_answer(make_gateway: Any, aiohttp_server: Any) -> None:
    """check_shape: the status passed as None, the content type defaulting to None or ``"XXXX"``,
    ``has_location`` passed as None or inverted; a raw answer's media type defaulting to None or
    another one; the stream's params dropped and its ``X-Request-ID`` misnamed."""
    server, base = await _bare_origin(
        {
            "/shaped": _plain("200 OK", b"{}"),
            "/moved": _plain("302 Found", b"<html>moved</html>", "Location: /where/v2", "Content-Type: text/html"),
            "/raw/n1": _plain("200 OK", b"raw bytes"),
            "/raw/k1": _plain("200 OK", b"kept bytes"),
        }
    )
    try:
        gw = await make_gateway(YAML, env={"ORIGIN_URL": base})
        err = await _error(await gw.get("/v1/shaped"), 502, "shape_drift")
        assert err["message"] == "upstream answered no content type where application/json was expected"
        resp = await gw.get("/v1/moved")  # a reported redirect's body is not the answer: no media type to judge
        assert resp.status == 200 and await resp.json() == {"where": "v2"}
        resp = await gw.get("/v1/raw/n1", headers={"X-Request-ID": "rid-raw-1"})
        assert resp.status == 200 and await resp.read() == b"raw bytes"
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["X-Name"] == "n1"
        assert resp.headers["X-Request-ID"] == "rid-raw-1"
        kept = await gw.get("/v1/kept-raw/k1")  # a cache fill takes the answer whole (rebuild, not stream)
        assert kept.status == 200 and await kept.read() == b"kept bytes"
        assert kept.headers["Content-Type"] == "application/octet-stream"
    finally:
        server.close()
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    fake.script("/shaped", 201)
    err = await _error(await gw.get("/v1/shaped"), 502, "shape_drift")
    assert err["message"] == "upstream answered 201 where 200 was expected"
    fake.script("/shaped", Reply(200, body=b"{}", headers={"Content-Type": "text/html"}))
    err = await _error(await gw.get("/v1/shaped"), 502, "shape_drift")
    assert err["message"] == "upstream answered text/html where application/json was expected"
    fake.script("/shaped", Reply(200, body=b"{}"))
    resp = await gw.get("/v1/shaped")
    assert resp.status == 200 and await resp.json() == {}


# --------------------------------------------------------------------------- proxy/respond.py


async def test_an_idle_keep_alive_connection_holds_no_relayed_answer(make_gateway: Any, aiohttp_server: Any) -> None:
    """``self._answer = None`` left out of ``_Relayed.write_eof``: the answer stays counted in
    ``gateway_upstream_buffered_bytes`` while its connection waits for its next request."""
    gw, _ = await _gateway(make_gateway, aiohttp_server)
    async with aiohttp.ClientSession() as session:  # its connection stays open, idle
        async with session.get(gw.make_url("/v1/things/1")) as resp:
            assert resp.status == 200 and (await resp.json())["path"] == "/things/1"
        await asyncio.sleep(0.05)
        metrics = await (await gw.get("/metrics")).text()
        assert "gateway_upstream_buffered_bytes 0.0" in metrics


# --------------------------------------------------------------------------- collection.py


async def _walk_pages(gw: TestClient[Any, Any], url: str, limit: int, **query: str) -> list[list[Any]]:
    """Every page of a cursor walk: the items of each."""
    pages: list[list[Any]] = []
    cursor = None
    for _ in range(20):
        params = {"limit": str(limit), **query, **({"cursor": cursor} if cursor else {})}
        resp = await gw.get(url, params=params)
        body = await resp.json()
        assert resp.status == 200, body
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("the walk never ended")


async def test_limit_and_all_are_checked_before_any_call(make_gateway: Any, aiohttp_server: Any) -> None:
    """_limit and all_flag: the bounds (1 and max_limit both allowed), a limit that is not plain ASCII
    digits, the default limit, the two words ``all`` takes, all=true winning over a (still checked)
    limit, and the 400s."""
    gw, origin, _ = await _mutants_gateway(make_gateway, aiohttp_server)
    for raw in ("0", "201", "-1", "ten", "", "1.5", "1_0", "+5", " 5", "\uff15"):
        err = await _error(await gw.get("/v1/counted", params={"limit": raw}), 400, "bad_limit")
        assert err["message"] == f"limit must be an integer from 1 to 200, got {raw!r}"
        assert err["route"] == "counted"
    for raw in ("maybe", "2", "truly", "TRUE", "1", "yes", "no", "0", ""):
        err = await _error(await gw.get("/v1/counted", params={"all": raw}), 400, "bad_query")
        assert err["message"] == f"all must be true or false, got {raw!r}"
    assert origin.seen == []
    padded = await (await gw.get("/v1/counted", params={"limit": "0000000004"})).json()  # ten digits: the most read
    assert [i["id"] for i in padded["items"]] == [0, 1, 2, 3]
    one = await (await gw.get("/v1/counted", params={"limit": "1"})).json()
    assert [i["id"] for i in one["items"]] == [0] and one["next_cursor"]
    most = await (await gw.get("/v1/counted", params={"limit": "200"})).json()
    assert [i["id"] for i in most["items"]] == list(range(8)) and most["next_cursor"] is None
    default = await (await gw.get("/v1/counted")).json()
    assert len(default["items"]) == 8
    body = await (await gw.get("/v1/counted", params={"all": "true"})).json()
    assert [i["id"] for i in body["items"]] == list(range(8)) and body["next_cursor"] is None
    body = await (await gw.get("/v1/counted", params={"all": "false", "limit": "2"})).json()
    assert [i["id"] for i in body["items"]] == [0, 1] and body["next_cursor"]
    body = await (await gw.get("/v1/counted", params={"all": "true", "limit": "2"})).json()  # all=true wins
    assert [i["id"] for i in body["items"]] == list(range(8)) and body["next_cursor"] is None
    await _error(await gw.get("/v1/counted", params={"all": "true", "limit": "0"}), 400, "bad_limit")


async def test_a_cursor_walk_goes_on_where_it_stopped(make_gateway: Any, aiohttp_server: Any) -> None:
    """serve: the cursor read and written, each page the stable shape in JSON; the walk's pages as the
    upstream's (offset, page, token and next-link styles)."""
    gw, _, _ = await _mutants_gateway(make_gateway, aiohttp_server)
    pages = await _walk_pages(gw, "/v1/counted", 3)
    assert [[i["id"] for i in p] for p in pages] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    pages = await _walk_pages(gw, "/v1/paged", 4)
    assert [[i["id"] for i in p] for p in pages] == [[0, 1, 2, 3], [4, 5]]
    pages = await _walk_pages(gw, "/v1/tokened", 1)
    assert [[i["id"] for i in p] for p in pages] == [[0], [1]]
    pages = await _walk_pages(gw, "/v1/linked/ok", 3)
    assert [[i["id"] for i in p] for p in pages] == [[0, 1, 2], [3, 4, 5]]


async def test_a_next_link_cursor_must_stay_below_its_route_s_path(make_gateway: Any, aiohttp_server: Any) -> None:
    """_check_link_cursor: the target's path built with the request's params, a trailing '/' ignored,
    the link's path up to its first '?'."""
    gw, origin, _ = await _mutants_gateway(make_gateway, aiohttp_server)
    first = await (await gw.get("/v1/linked/ok", params={"limit": "1"})).json()
    assert [i["id"] for i in first["items"]] == [0]
    cursor = first["next_cursor"]
    # the same cursor on another variant: the link is below /linked/ok, not /linked/other
    err = await _error(await gw.get("/v1/linked/other", params={"cursor": cursor}), 400, "bad_cursor")
    assert err["route"] == "linked"
    before = len(origin.seen)
    resp = await gw.get("/v1/linked/ok", params={"cursor": cursor, "limit": "2"})
    body = await resp.json()
    assert resp.status == 200, body
    assert [i["id"] for i in body["items"]] == [1, 2]
    assert len(origin.seen) > before


async def test_a_fan_out_walk_keeps_its_streams(make_gateway: Any, aiohttp_server: Any) -> None:
    """serve: the fan-out's streams from the query, then from the cursor; a cursor shown with other
    streams is a 400 naming them; stable_pages: each stream's own parameter value."""
    gw, origin, _ = await _mutants_gateway(make_gateway, aiohttp_server)
    first = await (await gw.get("/v1/merged", params=[("type", "a"), ("type", "b"), ("limit", "2")])).json()
    assert first["items"] == [{"t": 10, "type": "a"}, {"t": 9, "type": "b"}]
    cursor = first["next_cursor"]
    err = await _error(await gw.get("/v1/merged", params={"type": "a", "cursor": cursor}), 400, "bad_cursor")
    assert err["message"] == "the cursor was issued for type=a,b; repeat that type or leave it out"
    both = [("type", "b"), ("type", "a"), ("cursor", cursor), ("limit", "2")]
    same = await (await gw.get("/v1/merged", params=both)).json()
    rest = await (await gw.get("/v1/merged", params={"cursor": cursor, "limit": "2"})).json()
    assert same == rest
    assert rest["items"] == [{"t": 8, "type": "a"}, {"t": 7, "type": "b"}]
    only_b = await (await gw.get("/v1/merged", params={"type": "b", "all": "true"})).json()
    assert only_b == {"items": [{"t": 9, "type": "b"}, {"t": 7, "type": "b"}], "next_cursor": None}
    assert {q for p, q in origin.seen if p == "/streams"} >= {"type=a", "type=b"}


async def test_ndjson_pages_and_streams_carry_the_same_items(make_gateway: Any, aiohttp_server: Any) -> None:
    """serve: NDJSON for a page (its cursor in the last line) and for ``all=true`` (a stream)."""
    gw, _, _ = await _mutants_gateway(make_gateway, aiohttp_server)
    ndjson = {"Accept": "application/x-ndjson"}
    resp = await gw.get("/v1/counted", params={"limit": "3"}, headers=ndjson)
    lines = [json.loads(line) for line in (await resp.read()).decode().splitlines()]
    assert resp.status == 200 and lines == [{"id": 0}, {"id": 1}, {"id": 2}]
    rest = await gw.get("/v1/counted", params={"cursor": resp.headers["X-Next-Cursor"]}, headers=ndjson)
    lines = [json.loads(line) for line in (await rest.read()).decode().splitlines()]
    assert lines == [{"id": i} for i in range(3, 8)] and "X-Next-Cursor" not in rest.headers
    resp = await gw.get("/v1/counted", params={"all": "true"}, headers=ndjson)
    lines = [json.loads(line) for line in (await resp.read()).decode().splitlines()]
    assert resp.status == 200 and lines == [{"id": i} for i in range(8)]


async def _kinds(gw: TestClient[Any, Any], route: str) -> dict[str, float]:
    """``gateway_upstream_errors_total`` of a route by kind."""
    text = await (await gw.get("/metrics")).text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gateway_upstream_errors_total{") and f'route="{route}"' in line:
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            out[kind] = float(line.rsplit(" ", 1)[1])
    return out


async def test_each_upstream_status_is_the_error_it_means(make_gateway: Any, aiohttp_server: Any) -> None:
    """check_status: every branch's status, code, message, Retry-After and the kind it is counted as
    (``kind=None`` or misspelled), a read's 400/422 against a write's, 304 and success passing."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    said = b'{"detail": "said so"}'
    reads = [
        (401, said, 502, "upstream_auth_rejected",
         "upstream 'origin' rejected the gateway's credentials (401): said so; renew them"),
        (403, b"", 502, "upstream_forbidden",
         "upstream 'origin' refused this call with the configured credential (403): it lacks a permission"
         " or scope this route needs; grant it"),
        (403, said, 502, "upstream_forbidden",
         "upstream 'origin' refused this call with the configured credential (403): it lacks a permission"
         " or scope this route needs (said so); grant it"),
        (429, said, 503, "upstream_rate_limited", "upstream 'origin' is rate limiting the gateway: said so"),
        (429, b"", 503, "upstream_rate_limited", "upstream 'origin' is rate limiting the gateway"),
        (400, said, 502, "upstream_rejected",
         "upstream 'origin' rejected GET /things/{id} (400): said so - the gateway built every parameter from"
         " validated input, so the upstream API changed; check routes.yaml"),
        (422, b"", 502, "upstream_rejected",
         "upstream 'origin' rejected GET /things/{id} (422) - the gateway built every parameter from"
         " validated input, so the upstream API changed; check routes.yaml"),
        (409, said, 409, "upstream_rejected", "said so"),
        (418, b"", 502, "upstream_refused", "upstream 'origin' refused GET /things/{id} (418)"),
        (499, b"", 502, "upstream_refused", "upstream 'origin' refused GET /things/{id} (499)"),
        (300, b"", 502, "bad_redirect", "upstream 'origin' answered an unexpected redirect (300)"),
        (399, b"", 502, "bad_redirect", "upstream 'origin' answered an unexpected redirect (399)"),
        (500, said, 502, "upstream_failed", "upstream 'origin' failed with 500: said so"),
        (503, b"", 502, "upstream_failed", "upstream 'origin' failed with 503"),
    ]
    kinds = {401: "credentials_rejected", 403: "forbidden", 429: "throttled", 400: "4xx", 422: "4xx",
             418: "4xx", 499: "4xx", 300: "redirect", 399: "redirect", 500: "5xx", 503: "5xx"}
    for status, body, answered, code, message in reads:
        headers = {"Retry-After": "7"} if status == 429 and body else {}
        fake.script("/things/1", Reply(status, body=body, headers=headers))
        before = await _kinds(gw, "thing")
        resp = await gw.get("/v1/things/1")
        err = await _error(resp, answered, code)
        assert err["message"] == message, status
        assert err["route"] == "thing"
        assert resp.headers.get("Retry-After") == ("7" if headers else None), status
        after = await _kinds(gw, "thing")  # each failure counted under its kind (a 409 is the caller's)
        kind = kinds.get(status)
        assert after == ({**before, kind: before.get(kind, 0) + 1} if kind else before), status
    for status in (200, 299):
        fake.script("/things/1", Reply(status, body=b'{"ok": true}'))
        resp = await gw.get("/v1/things/1")
        assert resp.status == status and await resp.json() == {"ok": True}
    writes = [(400, said, "said so"), (409, b"", "upstream 'origin' refused the request (409)"), (422, said, "said so")]
    for status, body, message in writes:
        fake.script("/passed", Reply(status, body=body))
        err = await _error(await gw.post("/v1/passed", json={"a": 1}), status, "upstream_rejected")
        assert err["message"] == message and err["route"] == "passed"
    fake.script("/passed", Reply(401, body=said))
    await _error(await gw.post("/v1/passed", json={"a": 1}), 502, "upstream_auth_rejected")


async def test_a_write_answers_its_declared_status_headers_and_item(make_gateway: Any, aiohttp_server: Any) -> None:
    """head and rebuild: the declared status, a declared header (and an optional one with no value
    left out: headers see no body), a mapped item; an upstream status kept when nothing is declared; 204 empty."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    fake.script("/made/m1", Reply(200, body=b'{"other": 1}'))
    resp = await gw.post("/v1/made/m1", json={"a": 1})
    assert resp.status == 201 and await resp.json() == {"id": "m1"}
    assert resp.headers["Location"] == "m1" and "X-Gone" not in resp.headers
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    fake.script("/passed", Reply(202, body=b'{"queued": 1}'))
    resp = await gw.post("/v1/passed", json={"a": 1})
    assert resp.status == 202 and await resp.json() == {"queued": 1}
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    fake.script("/emptied/e1", Reply(200, body=b'{"deleted": true}'))
    resp = await gw.delete("/v1/emptied/e1")
    assert resp.status == 204 and await resp.read() == b""
    assert "Content-Type" not in resp.headers and "Content-Length" not in resp.headers
    assert resp.headers["X-Deleted"] == "e1"


async def test_an_upstream_body_that_is_not_json_is_502(make_gateway: Any, aiohttp_server: Any) -> None:
    """parse_json: the reason shown only where it helps (NaN, too deep), never for plain garbage;
    for a mapped item and for a passed-through body alike."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    deep = b"[" * 1100 + b"]" * 1100
    cases = [
        (b"<html>", "upstream 'origin' returned malformed JSON"),
        (b'{"a": NaN}', "upstream 'origin' returned malformed JSON (NaN is not JSON)"),
        (deep, "upstream 'origin' returned malformed JSON (JSON nested deeper than 1024 levels)"),
    ]
    for body, message in cases:
        fake.script("/passed", Reply(200, body=body))
        err = await _error(await gw.post("/v1/passed", json={"a": 1}), 502, "upstream_bad_json")
        assert err["message"] == message and err["route"] == "passed"
        fake.script("/made/m1", Reply(200, body=body))
        err = await _error(await gw.post("/v1/made/m1", json={"a": 1}), 502, "upstream_bad_json")
        assert err["message"] == message and err["route"] == "made"


async def test_a_read_carries_a_validator_and_answers_304_to_it(make_gateway: Any, aiohttp_server: Any) -> None:
    """validator: the ETag (a weak SHA-1 of the body), 304 without a body keeping only the listed
    headers, another tag or an error answered in full, no validator on writes."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    fake.script("/things/1", Reply(200, body=b'{"v": 1}'))
    first = await gw.get("/v1/things/1")
    body = await first.read()
    etag = 'W/"' + hashlib.sha1(body).hexdigest()[:24] + '"'
    assert first.headers["ETag"] == etag
    for asked in (etag, etag.removeprefix("W/"), "*", f'"x", {etag}'):
        resp = await gw.get("/v1/things/1", headers={"If-None-Match": asked})
        assert resp.status == 304 and await resp.read() == b"", asked
        assert resp.headers["ETag"] == etag and "Content-Type" not in resp.headers
    resp = await gw.get("/v1/things/1", headers={"If-None-Match": '"other"'})
    assert resp.status == 200 and await resp.read() == body
    fake.script("/things/1", Reply(200, body=b'{"v": 2}'))
    resp = await gw.get("/v1/things/1", headers={"If-None-Match": etag})
    assert resp.status == 200 and resp.headers["ETag"] != etag
    fake.script("/things/1", 500)
    resp = await gw.get("/v1/things/1", headers={"If-None-Match": "*"})
    assert resp.status == 502 and "ETag" not in resp.headers
    resp = await gw.post("/v1/passed", json={"a": 1})
    assert resp.status == 200 and "ETag" not in resp.headers  # writes carry no validator
    # ... and a condition on a write is refused, not forwarded without it (conventions.preconditions)
    resp = await gw.post("/v1/passed", json={"a": 1}, headers={"If-None-Match": "*"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "precondition_unsupported"


# --------------------------------------------------------------------------- admission.py, account.py

KEYED = YAML.replace(
    "routes:\n",
    """server:
  max_concurrency: 1
clients:
  keys:
    alice: {key: {env: ALICE_KEY}, routes: [thing], rate_limit: 2/1m}
    bob: {key: {env: BOB_KEY}, methods: [GET]}
routes:
""",
    1,
).replace("server:\n  max_body_bytes: 1KiB\n  client_timeouts: {headers: 1s, body: 1s}\n", "", 1)
ALICE = {"X-API-Key": "alice-key-" + "a" * 24}
BOB = {"X-API-Key": "bob-key-" + "b" * 24}


async def test_keys_grants_and_limits_answer_before_any_call(make_gateway: Any, aiohttp_server: Any) -> None:
    """client_auth and limits: 401 without a key, 403 outside its grants, 429 over the key's own rate
    (another key unaffected), one request at a time under ``max_concurrency: 1`` and the slot given back."""
    fake, _, base = await start_fake(aiohttp_server)
    env = {"ORIGIN_URL": base, "ORIGIN_KEY": ORIGIN_KEY, "ALICE_KEY": ALICE["X-API-Key"], "BOB_KEY": BOB["X-API-Key"]}
    gw = await make_gateway(KEYED, env=env)
    await _error(await gw.get("/v1/things/1"), 401, "missing_api_key")
    await _error(await gw.get("/v1/listing", headers=ALICE), 403, "route_not_allowed")
    await _error(await gw.post("/v1/passed", json={"a": 1}, headers=BOB), 403, "method_not_allowed_for_key")
    assert fake.count() == 0
    for _ in range(2):
        assert (await gw.get("/v1/things/1", headers=ALICE)).status == 200
    err = await _error(await gw.get("/v1/things/1", headers=ALICE), 429, "rate_limited")
    assert err["route"] == "thing"
    assert fake.count() == 2
    for _ in range(3):  # bob has no rate limit, and each request gives its slot back
        assert (await gw.get("/v1/things/1", headers=BOB)).status == 200
    fake.script("/things/slow", Reply(200, delay=0.5))
    slow = asyncio.ensure_future(gw.get("/v1/things/slow", headers=BOB))
    await asyncio.sleep(0.2)
    await _error(await gw.get("/v1/things/2", headers=BOB), 429, "over_capacity")
    assert (await slow).status == 200
    assert (await gw.get("/v1/things/2", headers=BOB)).status == 200


async def _errors_counted(gw: TestClient[Any, Any], route: str) -> float:
    text = await (await gw.get("/metrics")).text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_upstream_errors_total{") and f'route="{route}"' in line
    )


async def test_every_upstream_failure_is_counted_once(make_gateway: Any, aiohttp_server: Any) -> None:
    """account: a failure raised, and one that cut a relayed answer short, each counted once on its
    route (and the route marked down); a success after it counts nothing."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    fake.script("/things/1", 500)
    for n in (1, 2):
        assert (await gw.get("/v1/things/1")).status == 502
        assert await _errors_counted(gw, "thing") == n
    metrics = await (await gw.get("/metrics")).text()
    assert 'gateway_route_up{route="thing"} 0.0' in metrics
    fake.script("/raw/cut", CUT)
    resp = await gw.get("/v1/raw/cut")
    with contextlib.suppress(aiohttp.ClientPayloadError):  # cut short: the client sees it too
        await resp.read()
    await asyncio.sleep(0.05)
    assert await _errors_counted(gw, "raw") == 1
    fake.script("/raw/fine", Reply(200, body=b"fine"))
    resp = await gw.get("/v1/raw/fine")
    assert resp.status == 200 and await resp.read() == b"fine"
    assert await _errors_counted(gw, "raw") == 1
    assert await _errors_counted(gw, "thing") == 2


def _page(ids: list[int], nxt: str | None = None) -> Reply:
    return Reply(body=json.dumps({"results": [{"id": i} for i in ids], "next": nxt}).encode())


async def test_a_walk_s_cache_entry_is_as_fresh_as_its_stalest_page(make_gateway: Any, aiohttp_server: Any) -> None:
    """serve and stable_pages: the cache's notes handed down (``notes=None`` or left out), so every
    page's Cache-Control counts: 600 s for the first page, 5 s for the rest."""
    gw, origin, clock = await _mutants_gateway(make_gateway, aiohttp_server)
    first = await gw.get("/v1/fresh-pages", params={"all": "true"})
    assert first.status == 200 and first.headers["X-Cache"] == "MISS"
    assert [i["id"] for i in (await first.json())["items"]] == list(range(8))
    fetched = origin.fetches("/offset/fresh")
    assert fetched == 4  # pages after the first asked from the item before them (gateway.pagination.offset)
    clock.now += 3
    again = await gw.get("/v1/fresh-pages", params={"all": "true"})
    assert again.headers["X-Cache"] == "HIT" and origin.fetches("/offset/fresh") == fetched
    clock.now += 3  # 6 s: past the later pages' 5 s, well within the first page's 600 and the route's 60
    later = await gw.get("/v1/fresh-pages", params={"all": "true"})
    assert later.headers["X-Cache"] != "HIT" and origin.fetches("/offset/fresh") == 2 * fetched


async def test_a_collection_s_access_line_counts_its_upstream_calls(
    make_gateway: Any, aiohttp_server: Any, caplog: Any
) -> None:
    """serve and stable_pages: the request's record handed down (``trace=None`` or left out)."""
    import logging

    caplog.set_level(logging.INFO, logger="gateway.access")
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    fake.script("/listed", _page([1, 2], "t2"), _page([3]))
    resp = await gw.get("/v1/listed", params={"all": "true"}, headers={"X-Request-ID": "rid-walk-1"})
    assert [i["id"] for i in (await resp.json())["items"]] == [1, 2, 3]
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == "rid-walk-1"]
    assert len(lines) == 1
    fields = lines[0].fields
    assert fields["upstream_calls"] == 2 and fields["upstream_status"] == 200


async def test_an_ndjson_stream_marks_its_route_up_and_its_failure_names_it(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """serve: ``done`` (the route marked up once the stream ends) dropped or marking no route; the
    stream's route (its error line) and ``scrub`` (a secret in the upstream's words) dropped."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    ndjson = {"Accept": "application/x-ndjson"}
    fake.script("/secured", 500)
    assert (await gw.get("/v1/secured")).status == 502
    assert 'gateway_route_up{route="secured"} 0.0' in await (await gw.get("/metrics")).text()
    fake.script("/secured", _page([1], "t2"), _page([2]))
    resp = await gw.get("/v1/secured", params={"all": "true"}, headers=ndjson)
    assert [json.loads(line) for line in (await resp.read()).decode().splitlines()] == [{"id": 1}, {"id": 2}]
    assert 'gateway_route_up{route="secured"} 1.0' in await (await gw.get("/metrics")).text()
    leak = json.dumps({"detail": f"token {ORIGIN_KEY} expired"}).encode()
    fake.script("/secured", _page([1], "t2"), Reply(500, body=leak))
    resp = await gw.get("/v1/secured", params={"all": "true"}, headers=ndjson)
    got = b""
    with contextlib.suppress(aiohttp.ClientPayloadError):  # cut short, visibly
        async for chunk in resp.content.iter_any():
            got += chunk
    text = got.decode()
    assert ORIGIN_KEY not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0] == {"id": 1}
    error = lines[-1]["error"]
    assert error["code"] == "upstream_failed" and error["route"] == "secured"
    assert error["message"].startswith("upstream 'keyed' failed with 500: token ")


async def test_a_page_that_is_not_json_is_502_naming_the_upstream(make_gateway: Any, aiohttp_server: Any) -> None:
    """stable_pages: the route handed to the page's parsing (``_json(None, resp)``)."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    fake.script("/listed", Reply(200, body=b"<html>"))
    err = await _error(await gw.get("/v1/listed"), 502, "upstream_bad_json")
    assert err["message"] == "upstream 'origin' returned malformed JSON" and err["route"] == "listed"


async def test_a_relative_next_link_is_read_against_the_page_s_own_url(make_gateway: Any, aiohttp_server: Any) -> None:
    """stable_pages: the answer's URL (``None`` or left out): ``rel?page=2`` on ``/list/rel`` is
    ``/list/rel?page=2``, not ``/rel?page=2`` below the base URL."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    first = Reply(body=b'{"results": [{"id": 1}]}', headers={"Link": '<rel?page=2>; rel="next"'})
    fake.script("/list/rel", first, Reply(body=b'{"results": [{"id": 2}]}'))
    resp = await gw.get("/v1/relative", params={"all": "true"})
    body = await resp.json()
    assert resp.status == 200, body
    assert body == {"items": [{"id": 1}, {"id": 2}], "next_cursor": None}
    assert [(h.path, h.query) for h in fake.hits] == [("/list/rel", ""), ("/list/rel", "page=2")]


MIXED = YAML + """
  mixed:
    stable: GET /v1/mixed
    upstream: origin
    auth: none
    pagination: {style: cursor, token: next, items: results}
    fallback_on: [404]
    targets:
      - GET /oldX
      - request: GET /newX
        pagination: {style: next_url, items: results}
    cache: {ttl: 60s}
"""


def _linked(ids: list[int], link: str | None = None) -> Reply:
    headers = {"Link": f'<{link}>; rel="next"'} if link else {}
    return Reply(body=json.dumps({"results": [{"id": i} for i in ids]}).encode(), headers=headers)


async def test_a_walk_over_targets_that_page_differently(make_gateway: Any, aiohttp_server: Any) -> None:
    """_walk and _check_link_cursor: a fresh walk handed over to the next target walks it its own way
    (its link fetched, ``at=None`` asks for the first page again; its base URL); a cursor on it checks
    its link against that target's path only (``and False``); a target that stops serving mid-walk is
    502 ``pagination_switched`` (``underway`` never set), and the route's cached pages go (``purge(None)``).
    The paths end in 'X': a '/' stripped as ``"XX/XX"`` would strip it too."""
    fake, _, base = await start_fake(aiohttp_server)
    gw = await make_gateway(MIXED, env={"ORIGIN_URL": base, "ORIGIN_KEY": ORIGIN_KEY})
    fake.script("/oldX", 404)
    fake.script("/newX", _linked([1, 2], f"{base}/newX?page=2"), _linked([3]))
    first = await (await gw.get("/v1/mixed", params={"limit": "2"})).json()
    assert first["items"] == [{"id": 1}, {"id": 2}], first
    rest = await (await gw.get("/v1/mixed", params={"cursor": first["next_cursor"]})).json()
    assert rest == {"items": [{"id": 3}], "next_cursor": None}
    assert [(h.path, h.query) for h in fake.hits] == [("/oldX", ""), ("/newX", ""), ("/newX", "page=2")]
    # the new target links back below the old one: a cursor carrying that link is refused
    fake.script("/newX", _linked([1], f"{base}/oldX?page=2"))
    odd = await (await gw.get("/v1/mixed", params={"limit": "1"})).json()
    assert odd["items"] == [{"id": 1}]
    await _error(await gw.get("/v1/mixed", params={"cursor": odd["next_cursor"]}), 400, "bad_cursor")
    # the old target serves again, then stops mid-walk
    fake.script("/oldX", _page([1], "t2"), 404)
    err = await _error(await gw.get("/v1/mixed", params={"all": "true"}), 502, "pagination_switched")
    assert err["route"] == "mixed"
    fake.script("/oldX", _page([5, 6, 7], "t6"))
    page = await gw.get("/v1/mixed", params={"limit": "3"})
    assert page.headers["X-Cache"] == "MISS"
    cursor = (await page.json())["next_cursor"]
    assert (await gw.get("/v1/mixed", params={"limit": "3"})).headers["X-Cache"] == "HIT"
    fake.script("/oldX", 404)
    await _error(await gw.get("/v1/mixed", params={"cursor": cursor}), 502, "pagination_switched")
    asked = fake.count("/oldX")
    again = await gw.get("/v1/mixed", params={"limit": "3"})
    assert again.headers.get("X-Cache") != "HIT" and fake.count("/oldX") == asked + 1


FILED = (
    YAML
    + """
  filed:
    stable: GET /v1/filed/{id}
    upstream: filed
    targets: ["GET /filed/{id}"]
"""
).replace(
    "routes:\n",
    """  filed:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
    auth: {bearer: {file: "${TOKEN_FILE}"}}
routes:
""",
    1,
)


async def test_a_404_quoting_a_credential_renewed_a_moment_ago_hides_it(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Any
) -> None:
    """A token renewed in its file a second ago is hidden from a 404's upstream words too.  Every error
    leaving a route is scrubbed with freshly read secrets (``Proxy.handle``), so ``fresh=True`` in
    status.py is a second guard: its mutants are listed as equivalent, and this test shows why."""
    token = tmp_path / "token"
    token.write_text("first-token-" + "f" * 24)
    fake, _, base = await start_fake(aiohttp_server)
    gw = await make_gateway(FILED, env={"ORIGIN_URL": base, "ORIGIN_KEY": ORIGIN_KEY, "TOKEN_FILE": str(token)})
    fake.script("/filed/1", Reply(404, body=b'{"detail": "no such thing"}'))
    err = await _error(await gw.get("/v1/filed/1"), 404, "not_found")
    assert err["message"] == "no such thing"
    renewed = "renewed-token-" + "r" * 30
    token.write_text(renewed)
    fake.script("/filed/2", Reply(404, body=json.dumps({"detail": f"nothing for {renewed}"}).encode()))
    err = await _error(await gw.get("/v1/filed/2"), 404, "not_found")
    assert fake.hits[-1].headers["Authorization"] == f"Bearer {renewed}"
    assert renewed not in err["message"] and err["message"].startswith("nothing for ")


COUNTED = """
upstreams:
  origin:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
routes:
  moving:
    stable: GET /v1/moving
    upstream: origin
    auth: none
    pagination: {style: cursor, token: next, items: results}
    fallback_on: [shape]
    targets:
      - GET /echo/old
      - request: GET /offset/counted
        pagination: {style: offset, items: results, page_size: 3}
"""


async def test_a_handed_over_walk_fetches_the_counted_rest_at_once(make_gateway: Any, aiohttp_server: Any) -> None:
    """_walk: the upstream's concurrency handed to the walk (``None`` or left out): once the count is
    known, the rest of the offset pages are fetched together."""
    origin = Origin()
    server = await aiohttp_server(origin.app())
    gw = await make_gateway(COUNTED, env={"ORIGIN_URL": str(server.make_url(""))})
    resp = await gw.get("/v1/moving", params={"all": "true"})
    body = await resp.json()
    assert resp.status == 200, body
    assert body == {"items": [{"id": i} for i in range(8)], "next_cursor": None}
    assert sorted(q for p, q in origin.seen if p == "/offset/counted") == [  # each after the first from the item before
        "limit=3&offset=0", "limit=3&offset=2", "limit=3&offset=4", "limit=3&offset=6"
    ]


async def test_an_upstream_304_and_a_kept_raw_answer_pass_as_they_are(make_gateway: Any, aiohttp_server: Any) -> None:
    """rebuild: an upstream 304 answered 304 without a body (``or True``, ``!= 305``, ``else 305``, the
    check ``== 305``); a raw answer kept whole by the cache keeps its media type (None, another header,
    another default)."""
    gw, fake = await _gateway(make_gateway, aiohttp_server)
    fake.script("/things/1", Reply(304, body=b""))
    resp = await gw.get("/v1/things/1")
    assert resp.status == 304 and await resp.read() == b""
    fake.script("/raw/csv", Reply(200, body=b"a,b\n1,2\n", headers={"Content-Type": "text/csv"}))
    resp = await gw.get("/v1/kept-raw/csv")
    assert resp.status == 200 and await resp.read() == b"a,b\n1,2\n"
    assert resp.headers["Content-Type"] == "text/csv" and resp.headers["X-Cache"] == "MISS"
    again = await gw.get("/v1/kept-raw/csv")
    assert again.headers["Content-Type"] == "text/csv" and again.headers["X-Cache"] == "HIT"
