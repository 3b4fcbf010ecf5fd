"""The route sections read by their pydantic models (targets, response, shape, probe, clients/admin, an
upstream's auth): what ``gateway check`` says of their mistakes, what a good section builds, what an
editor's schema says of them, and that no message about a secret echoes what was written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway.config import ConfigError, parse_config
from tests.conftest import ROOT
from tests.helpers.cli import run

SCHEMA = ROOT / "routes.schema.json"

DOC = """\
upstreams:
  api:
    base_url: http://127.0.0.1:9
    auth:
{auth}
routes:
  r:
    stable: {stable}
    upstream: api
{route}
  other:
    stable: GET /v1/other
    upstream: api
    targets: ["GET /other"]
{top}"""
AUTH = "      bearer: {env: K}\n      cookies: {I: {env: C}}"
TARGET = '    targets: ["GET /x/{id}"]\n'


def doc(route: str = TARGET, auth: str = AUTH, top: str = "", stable: str = "GET /v1/r/{id}") -> str:
    return DOC.format(auth=auth, stable=stable, route=route, top=top)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "routes.yaml", {})
    return [str(p) for p in info.value.problems]


def test_a_target_mapping_is_read_by_its_model_with_the_old_explanations() -> None:
    got = problems(doc("    targets: [{request: 'GET /x/{id}', redirect: nope, body: {cons: 1}}]\n"))
    assert got == [
        "routes.yaml:11: routes.r.targets[0].body.cons: unknown key 'cons' (did you mean 'const'?); allowed: const",
        "routes.yaml:11: routes.r.targets[0].redirect: expected 'follow' (fetch the final target)"
        " or 'report' (answer from Location)",
    ]
    assert problems(doc("    targets: [{request: 'GTE /x/{id}', body: [1]}]\n")) == [
        "routes.yaml:11: routes.r.targets[0].request: unknown HTTP method 'GTE';"
        " use one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT",
        "routes.yaml:11: routes.r.targets[0].body: expected 'passthrough', 'none' or {const: <JSON value>}, got a list",
    ]
    assert problems(doc("    targets: [{request: 5}]\n")) == [
        "routes.yaml:11: routes.r.targets[0].request: expected 'METHOD /path', got a number (5)"
    ]


def test_a_good_target_mapping_builds_what_the_proxy_sends() -> None:
    route = "    targets: [{request: 'POST /x/{id}?a=1', query: {b: 2, c: '{id}'}, body: {const: {k: [1]}}}]\n"
    cfg = parse_config(doc(route, stable="POST /v1/r/{id}"), "routes.yaml", {})
    target = cfg.routes[0].targets[0]
    assert [k for k, _ in target.query] == ["a", "b", "c"]
    assert (target.method, target.body.mode, target.body.const, target.redirect) == (
        "POST",
        "const",
        b'{"k":[1]}',
        "follow",
    )
    report = parse_config(doc("    targets: [{request: 'GET /x/{id}', redirect: report, body: none}]\n"), "r.yaml", {})
    assert (report.routes[0].targets[0].redirect, report.routes[0].targets[0].body.mode) == ("report", "none")


def test_response_mappings_are_read_by_their_models() -> None:
    route = TARGET + (
        "    response:\n      item:\n        a: {field: x, type: long}\n        b: {location: 'x'}\n"
        "        c: {field: x, optional: maybe}\n        d: {param: zz}\n        e: 5\n      status: 99\n"
    )
    assert problems(doc(route)) == [
        "routes.yaml:14: routes.r.response.item.a.type: expected 'int' (an integer), 'str' (a string),"
        " 'float' (a number) or 'bool' (true or false)",
        "routes.yaml:15: routes.r.response.item.b.location: the pattern needs one capture group for the value",
        "routes.yaml:16: routes.r.response.item.c.optional: expected true or false, got a string",
        # the good entries are still checked against the route: d names a param it does not have
        "routes.yaml:17: routes.r.response.item.d.param: 'zz' is neither a path nor a declared param",
        "routes.yaml:18: routes.r.response.item.e: expected a field name or a mapping"
        " ({field|param|const|location: ...}), got a number (5)",
        "routes.yaml:19: routes.r.response.status: must be at least 100, got 99",
    ]
    good = TARGET + "    response:\n      item: {id: {param: id, type: int}, when: {location: 'v=(\\d+)'}, n: x.y}\n"
    item = parse_config(doc(good), "routes.yaml", {}).routes[0].response.item
    assert item is not None and [(k, e.source) for k, e in item] == [
        ("id", "param"),
        ("when", "location"),
        ("n", "field"),
    ]


def test_a_shape_is_read_by_its_model_and_each_type_checked_where_it_is() -> None:
    route = (
        TARGET + "    shape: {status: 2000, content_type: json, fields: {a: 'string|nul', b: [integer, nope], c: []}}\n"
    )
    assert problems(doc(route)) == [
        "routes.yaml:12: routes.r.shape.status: must be at most 599, got 2000",
        "routes.yaml:12: routes.r.shape.content_type: expected a media type such as application/json"
        " (no parameters), got 'json'",
        "routes.yaml:12: routes.r.shape.fields.a: expected one of any, array, boolean, integer, null, number,"
        " object, string (or several joined with '|'), got a string",
        "routes.yaml:12: routes.r.shape.fields.b[1]: expected 'any', 'array', 'boolean', 'integer', 'null',"
        " 'number', 'object' or 'string', got a string",
        "routes.yaml:12: routes.r.shape.fields.c: expected one of any, array, boolean, integer, null, number,"
        " object, string (or several joined with '|'), got an empty list",
    ]
    good = TARGET + "    shape: {content_type: Application/JSON, fields: {a: 'string|null', b: [integer]}}\n"
    shape = parse_config(doc(good), "routes.yaml", {}).routes[0].shape
    assert shape is not None and shape.content_type == "application/json"
    assert shape.fields == ((("a",), frozenset({"string", "null"})), (("b",), frozenset({"integer"})))


def test_a_probe_keeps_its_good_samples_when_one_is_wrong() -> None:
    route = TARGET + "    probe: {params: {id: 7, zz: [1]}}\n"
    # only the wrong sample is reported: id's sample is still there, so no 'needs a sample for id'
    assert problems(doc(route)) == [
        "routes.yaml:12: routes.r.probe.params.zz: expected a sample value or {from: ROUTE, field: FIELD}, got a list"
    ]
    assert problems(doc(TARGET + "    probe: {params: {id: {from: 5, field: id}}}\n"))[0] == (
        "routes.yaml:12: routes.r.probe.params.id.from: expected a route name, got a number (5)"
    )
    probe = parse_config(doc(TARGET + "    probe: {params: {id: true}}\n"), "routes.yaml", {}).routes[0].probe
    assert probe is not None and probe.path_params == (("id", "true"),)


def test_client_keys_are_read_by_their_models() -> None:
    top = (
        "clients:\n  keys:\n    a b: {key: {env: X}, methods: [get, FETCH], rate_limit: fast, routes: [zz*]}\n"
        "    c: {key: {env: X}, rate_limit: {requests: 5, per: 0s}}\n"
        "admin: {keys: {d: {key: {env: Y}, routes: [r]}}}\n"
    )
    assert problems(doc(top=top)) == [
        "routes.yaml:19: clients.keys.a b.methods[1]: expected 'GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'"
        " or 'OPTIONS', got a string",
        "routes.yaml:19: clients.keys.a b.rate_limit: 'fast' is not a rate such as 10/s or 600/1m"
        " (or write {requests: 600, per: 1m, burst: 20})",
        "routes.yaml:19: clients.keys.a b: key names use letters, digits, '_', '-' and '.'",
        "routes.yaml:20: clients.keys.c.rate_limit.per: the window must be longer than 0s",
        "routes.yaml:21: admin.keys.d.routes: unknown key 'routes'; allowed: description, key",
    ]
    top = "clients:\n  keys:\n    a: {key: {env: X}, methods: [get], routes: [r], rate_limit: {requests: 6, per: 1m}}\n"
    (key,) = parse_config(doc(top=top), "routes.yaml", {}).access.clients
    assert (key.routes, key.methods) == (("r",), frozenset({"GET", "HEAD"}))
    assert key.rate_limit is not None and (key.rate_limit.rate, key.rate_limit.burst, key.rate_limit.text) == (
        0.1,
        6,
        "6/1m",
    )


def test_auth_expiry_and_check_are_read_by_their_models_and_checked_against_the_credentials() -> None:
    auth = AUTH + "\n      expiry: {cookie: J, field: exp, unit: us}\n      check: {request: GET /u?x=1, expect: 6}"
    assert problems(doc(auth=auth)) == [
        "routes.yaml:7: upstreams.api.auth.expiry.unit: expected s (seconds since the epoch) or ms (milliseconds),"
        " got a string",
        # each read on its own: the cookie the expiry names is checked although its unit is wrong
        "routes.yaml:7: upstreams.api.auth.expiry.cookie: no cookie named 'J' under auth.cookies",
        "routes.yaml:8: upstreams.api.auth.check.request: expected 'GET /path' (a safe GET on this upstream,"
        " no query), got 'GET /u?x=1'",
        "routes.yaml:8: upstreams.api.auth.check.expect: expected a dotted field of the answer such as 'login',"
        " got a number (6)",
    ]
    auth = AUTH + "\n      expiry: {cookie: I, field: exp, unit: ms}\n      check: {request: GET /u, expect: a.b}"
    up = parse_config(doc(auth=auth), "routes.yaml", {}).upstreams["api"]
    assert up.auth is not None and up.auth.expiry is not None and up.auth.check is not None
    assert (up.auth.expiry.credential, up.auth.expiry.unit) == ("cookie:I", "ms")
    assert (up.auth.check.path, up.auth.check.expect, up.auth.check.credential) == ("/u", ("a", "b"), "cookie:I")


SECRET = "sk_live_Zq8hunter2Xy"
PIN = "73914258"


@pytest.mark.parametrize(
    "auth",
    [
        f"      {SECRET}",  # the whole auth section
        f"      bearer: {SECRET}",
        f"      bearer: {PIN}",  # a number: not even a number is echoed
        f"      bearer: [{SECRET}]",  # a list item pasted inline (echoed before the port)
        f"      bearer: [{{env: K}}, {PIN}]",
        f"      bearer: {{value: {SECRET}}}",
        f"      bearer: {{{SECRET}}}",  # a flow mapping whose one key is the secret: not even the key path shows it
        f"      cookies: {{I: [{{env: C}}, {{{SECRET}: 1}}]}}",
        f"      bearer: {{env: {{x: {SECRET}}}}}",
        f"      bearer: {{env: {PIN}}}",
        f"      bearer: {{file: /run/k, json_key: {PIN}}}",
        f"      cookies: {{I: {SECRET}}}",
        f"      cookies: [{SECRET}]",
        f"      headers: {{X-Key: {PIN}}}",
        f"      bearer: {{env: K, file: {SECRET}}}",
    ],
)
def test_gateway_check_never_shows_a_secret_written_in_auth(tmp_path: Path, auth: str) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(doc(auth=auth))
    out = run("check", str(path))
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{path}:" in out.stderr and "upstreams.api.auth" in out.stderr, out.stderr
    assert SECRET not in out.stdout + out.stderr and PIN not in out.stdout + out.stderr, out.stderr


def test_a_client_or_admin_key_written_inline_is_never_shown(tmp_path: Path) -> None:
    top = f"clients: {{keys: {{a: {{key: [{SECRET}]}}}}}}\nadmin: {{keys: {{b: {{key: {PIN}}}}}}}\n"
    path = tmp_path / "routes.yaml"
    path.write_text(doc(top=top))
    out = run("check", str(path))
    assert out.returncode == 1
    assert "clients.keys.a.key[0]: expected {env: VAR}, {file: PATH} or {file_env: VAR}" in out.stderr
    assert "admin.keys.b.key: expected {env: VAR}, {file: PATH} or {file_env: VAR}" in out.stderr
    assert SECRET not in out.stderr + out.stdout and PIN not in out.stderr + out.stdout


def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA.read_text())
    return loaded


def test_the_editor_schema_describes_the_ported_sections() -> None:
    defs = _schema()["$defs"]
    target = defs["TargetSpec"]["properties"]
    assert target["redirect"]["enum"] == ["follow", "report"] and target["redirect"]["description"]
    # the meaning of each choice, as gateway check explains it, beside it in the editor
    assert target["redirect"]["enumDescriptions"] == ["fetch the final target", "answer from Location"]
    assert defs["PaginationSpec"]["properties"]["style"]["enumDescriptions"][0] == "the last item's field"
    assert {"enum": ["passthrough", "none"], "type": "string"} in target["body"]["oneOf"]
    assert defs["FieldSpec"]["properties"]["type"]["enum"] == ["int", "str", "float", "bool"]
    fields = defs["ShapeSpec"]["properties"]["fields"]["additionalProperties"]["oneOf"]
    assert fields[1]["items"]["enum"] == ["any", "array", "boolean", "integer", "null", "number", "object", "string"]
    assert defs["ExpirySpec"]["properties"]["unit"]["enum"] == ["s", "ms"]
    for name in ("TargetSpec", "FieldSpec", "ResponseSpec", "ShapeSpec", "ProbeSpec", "ClientKeySpec", "AuthSpec"):
        assert all(p.get("description") for p in defs[name]["properties"].values()), name
    validator = jsonschema.Draft202012Validator(_schema())
    bad = {
        "upstreams": {"api": {"base_url": "http://x", "auth": {"bearer": SECRET}}},
        "routes": {"r": {"stable": "GET /x", "upstream": "api", "targets": [{"request": "GET /x", "redirect": "no"}]}},
    }
    errors = {".".join(map(str, e.absolute_path)): e for e in validator.iter_errors(bad)}
    assert sorted(errors) == ["routes.r.targets.0", "upstreams.api.auth.bearer"]  # a target: a string or a mapping
    assert any(".redirect" in ".".join(map(str, c.absolute_path)) for c in errors["routes.r.targets.0"].context or [])
