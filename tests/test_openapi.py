"""The generated OpenAPI 3.1 document: valid, served, and true to what the gateway answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from gateway.config import load_config
from gateway.openapi import BODY_SCHEMAS, build
from gateway.server import GATEWAY
from gateway.validators import VALIDATORS
from sandbox.runner import Sandboxes
from tests.conftest import ROUTES
from tests.helpers.cli import run

KEYED = """
clients:
  keys:
    reader: {key: {env: READER_KEY}, methods: [GET], rate_limit: 100/s}
admin:
  keys:
    ops: {key: {env: ADMIN_KEY}}
"""
KEYS = {"READER_KEY": "rk_" + "r" * 30, "ADMIN_KEY": "ak_" + "a" * 30}


def test_gateway_openapi_prints_a_valid_openapi_31_document(tmp_path: Path) -> None:
    out = run("openapi", str(ROUTES))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    validate(doc)  # raises on any violation of the OpenAPI 3.1 specification
    assert doc["openapi"] == "3.1.0"
    config = load_config(ROUTES)
    operations = {op["operationId"] for item in doc["paths"].values() for op in item.values()}
    assert {r.name for r in config.routes} <= operations
    assert "security" not in doc  # no client keys in the shipped file
    text = out.stdout
    for upstream in config.upstreams.values():  # upstream URLs and targets are not the stable API's business
        assert str(upstream.base_url) not in text
    assert "/api/projects" not in text and "/user/documents" not in text
    help_text = run("openapi", "--help")
    assert help_text.returncode == 0 and "usage: routegate openapi" in help_text.stdout
    assert "Exit codes" not in help_text.stdout  # said once, by routegate --help
    bad = tmp_path / "bad.yaml"
    bad.write_text(ROUTES.read_text().replace("style: offset", "style: offsett"))
    out = run("openapi", str(bad))
    assert out.returncode == 1 and "pagination.style" in out.stderr and out.stdout == ""


def test_parameters_bodies_and_envelopes_follow_routes_yaml() -> None:
    doc = build(load_config(ROUTES))
    validate(doc)
    nb = doc["paths"]["/v1/observable/notebooks"]["get"]
    params = {p["name"]: p for p in nb["parameters"]}
    assert set(params) == {"type", "limit", "cursor", "all", "Cache-Control", "If-None-Match"}
    assert params["Cache-Control"]["in"] == "header"  # a caching route: the caller's directives, and
    assert set(nb["responses"]["200"]["headers"]) >= {"X-Cache", "Age"}  # what the cache answers with
    assert params["type"]["style"] == "form" and params["type"]["explode"] is False  # type=public,shared
    assert params["type"]["schema"]["items"]["enum"] == ["public", "shared", "private", "trash"]
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
    page = nb["responses"]["200"]["content"]["application/json"]["schema"]
    assert page["required"] == ["items", "next_cursor"]
    item = page["properties"]["items"]["items"]
    assert set(item["required"]) == {"id", "slug", "title", "type", "version", "likes", "updated_at"}
    detail = doc["paths"]["/v1/observable/notebooks/{id}"]["get"]
    assert [p["name"] for p in detail["parameters"]] == ["id", "Cache-Control", "If-None-Match"]  # no pagination
    assert detail["parameters"][0]["in"] == "path" and detail["parameters"][0]["required"] is True
    create_params = doc["paths"]["/v1/observable/notebooks"]["post"].get("parameters", [])
    assert "Cache-Control" not in {p["name"] for p in create_params}  # writes are not cached
    version = doc["paths"]["/v1/observable/notebooks/{id}/version"]["get"]["responses"]["200"]
    assert version["content"]["application/json"]["schema"]["properties"]["version"] == {"type": "integer"}
    module = doc["paths"]["/v1/observable/notebooks/{id}/module"]["get"]["responses"]["200"]
    assert "X-Notebook-Version" in module["headers"] and list(module["content"]) == ["application/javascript"]
    assert nb["responses"]["200"]["headers"]["Age"]["schema"] == {"type": "integer"}
    typed = item["properties"]  # typed from the route's shape: where the stable field comes from
    assert typed["id"] == {"type": "string"} and typed["updated_at"] == {"type": "string"}
    assert typed["version"] == {"type": "integer"} and typed["title"] == {"type": ["null", "string"]}
    create = doc["paths"]["/v1/observable/notebooks"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == BODY_SCHEMAS["observable_new_document"]
    assert {"413", "415", "422"} <= set(create["responses"])
    delete = doc["paths"]["/v1/posthog/projects/{project_id}/notebooks/{short_id}"]["delete"]
    assert "requestBody" not in delete and "content" not in delete["responses"]["204"]
    error = doc["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["code", "message", "route"]
    assert set(VALIDATORS) <= set(BODY_SCHEMAS)  # a new validator needs its body documented


async def test_served_document_matches_the_cli_and_documents_keys(
    make_gateway: Any, sandbox_env: dict[str, str]
) -> None:
    gw = await make_gateway()
    resp = await gw.get("/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    served = await resp.json()
    assert served == json.loads(run("openapi", str(ROUTES)).stdout)
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/status"):  # the gateway's own, as documented
        (media,) = served["paths"][path]["get"]["responses"]["200"]["content"]
        resp = await gw.get(path)
        assert resp.status == 200 and resp.content_type == media, path

    keyed = await make_gateway(ROUTES.read_text() + KEYED, env={**sandbox_env, **KEYS})
    resp = await keyed.get("/openapi.json")  # readable without a key, like /healthz
    doc = await resp.json()
    assert resp.status == 200
    validate(doc)
    assert doc["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    assert doc["components"]["securitySchemes"]["apiKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    listing = doc["paths"]["/v1/posthog/projects/{project_id}/notebooks"]["get"]["responses"]
    assert {"401", "403", "429"} <= set(listing)
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert "security" in doc["paths"]["/admin/reload"]["post"]
    status = doc["paths"]["/status"]["get"]  # the admin key once clients need keys (Basic for a browser)
    assert {"basicAuth": []} in status["security"] and "401" in status["responses"]
    assert doc["components"]["securitySchemes"]["basicAuth"]["scheme"] == "basic"
    assert (await keyed.get("/status")).status == 401
    assert KEYS["READER_KEY"] not in await resp.text()

    # a reload changes the document with the config
    path = Path(keyed.app[GATEWAY].runtime.config.path)
    path.write_text(path.read_text().replace("  posthog_notebook_activity:", "  posthog_activity_renamed:"))
    assert (await keyed.post("/admin/reload", headers={"X-API-Key": KEYS["ADMIN_KEY"]})).status == 200
    ops = {
        op["operationId"]
        for item in (await (await keyed.get("/openapi.json")).json())["paths"].values()
        for op in item.values()
    }
    assert "posthog_activity_renamed" in ops and "posthog_notebook_activity" not in ops


def _validator(doc: dict[str, Any], path: str, method: str, status: int, media: str) -> Draft202012Validator:
    responses = doc["paths"][path][method]["responses"]
    key = str(status) if str(status) in responses else f"{status // 100}XX"
    response = responses.get(key) or responses["default"]
    schema = response["content"][media]["schema"]
    return Draft202012Validator({**schema, "components": doc["components"]})


@pytest.mark.parametrize("keyed", [False, True])
async def test_real_answers_validate_against_the_documented_schemas(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes, keyed: bool
) -> None:
    gw = await make_gateway(ROUTES.read_text() + (KEYED if keyed else ""), env={**sandbox_env, **KEYS})
    doc = await (await gw.get("/openapi.json")).json()
    headers = {"X-API-Key": KEYS["READER_KEY"]} if keyed else {}
    nb_id = sandboxes.observable_state.by_kind("public")[0].id
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    calls: list[tuple[str, str, str, dict[str, Any] | None]] = [
        ("get", "/v1/observable/notebooks", "/v1/observable/notebooks?type=public,shared&limit=3", None),
        ("get", "/v1/observable/users/{login}/notebooks", "/v1/observable/users/alice/notebooks?limit=2", None),
        ("get", "/v1/observable/notebooks/{id}", f"/v1/observable/notebooks/{nb_id}", None),
        ("get", "/v1/observable/notebooks/{id}/version", f"/v1/observable/notebooks/{nb_id}/version", None),
        ("get", "/v1/posthog/projects/{project_id}/notebooks", "/v1/posthog/projects/1/notebooks?all=true", None),
        (
            "get",
            "/v1/posthog/projects/{project_id}/notebooks/{short_id}",
            f"/v1/posthog/projects/1/notebooks/{short_id}",
            None,
        ),
        (
            "get",
            "/v1/posthog/projects/{project_id}/notebooks/{short_id}/activity",
            f"/v1/posthog/projects/1/notebooks/{short_id}/activity",
            None,
        ),
        # errors: the one envelope, whatever the status
        ("get", "/v1/observable/notebooks", "/v1/observable/notebooks?type=nope", None),
        ("get", "/v1/observable/notebooks/{id}", "/v1/observable/notebooks/doesnotexist", None),
        ("get", "/v1/observable/notebooks/{id}", "/v1/observable/notebooks/a%2Fb", None),
    ]
    if keyed:
        calls.append(("post", "/v1/posthog/projects/{project_id}/notebooks", "/v1/posthog/projects/1/notebooks", {}))
    else:
        calls += [
            ("post", "/v1/posthog/projects/{project_id}/notebooks", "/v1/posthog/projects/1/notebooks", {"title": "x"}),
            ("post", "/v1/observable/notebooks", "/v1/observable/notebooks", {"nodes": [{"id": 0}], "version": 1}),
            ("post", "/v1/observable/notebooks", "/v1/observable/notebooks?reindex=true", {"nodes": [{"value": "1"}]}),
        ]
    statuses = []
    for method, template, url, body in calls:
        resp = await gw.request(method.upper(), url, headers=headers, json=body)
        statuses.append(resp.status)
        assert resp.content_type == "application/json", (url, resp.status)
        data = await resp.json()
        errors = [
            e.message for e in _validator(doc, template, method, resp.status, "application/json").iter_errors(data)
        ]
        assert errors == [], (url, resp.status, data)
        assert (
            str(resp.status) in doc["paths"][template][method]["responses"]
            or f"{resp.status // 100}XX" in (doc["paths"][template][method]["responses"])
        ), (url, resp.status)
    assert statuses[:7] == [200] * 7 and statuses[7:10] == [400, 404, 400]
    assert statuses[10:] == ([403] if keyed else [201, 422, 200])


async def test_the_cache_purge_answers_validate_against_the_document(
    make_gateway: Any, sandbox_env: dict[str, str]
) -> None:
    gw = await make_gateway(ROUTES.read_text() + KEYED, env={**sandbox_env, **KEYS, "ROUTEGATE_CACHE": "on"})
    doc = await (await gw.get("/openapi.json")).json()
    admin = {"X-API-Key": KEYS["ADMIN_KEY"]}
    for query, body, status in (("?all=true", None, 200), ("", {"route": "posthog_notebooks"}, 200), ("", None, 400)):
        resp = await gw.post("/admin/cache/purge" + query, headers=admin, json=body)
        data = await resp.json()
        assert resp.status == status, data
        validator = _validator(doc, "/admin/cache/purge", "post", resp.status, "application/json")
        assert [e.message for e in validator.iter_errors(data)] == [], data
    assert (await gw.post("/admin/cache/purge?all=true")).status == 401  # documented, with its security
    assert "401" in doc["paths"]["/admin/cache/purge"]["post"]["responses"]
    assert doc["paths"]["/admin/cache/purge"]["post"]["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
