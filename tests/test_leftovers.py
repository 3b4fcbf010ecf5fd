"""Issues 13/14/16 leftovers: the sandbox switch table, stable single-document fields, hostile logs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from gateway.config import ConfigError, load_config
from gateway.openapi import build as build_openapi
from gateway.sandbox.runner import Sandboxes
from gateway.sandbox.switches import SWITCHES, names_for
from tests.conftest import ROOT, ROUTES


async def _get_switches(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(url + "/_sandbox/faults") as r:
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body


async def test_switch_table_is_what_each_sandbox_lists(sandboxes: Sandboxes) -> None:
    """`curl /_sandbox/faults` on each sandbox lists exactly the table's switches for it."""
    for service, url in (("observable", sandboxes.observable_url), ("posthog", sandboxes.posthog_url)):
        assert set(await _get_switches(url)) == names_for(service), service


async def test_every_documented_example_is_accepted(sandboxes: Sandboxes) -> None:
    """Each table row's example body is a valid POST /_sandbox/faults on its sandbox; unknown names are 400."""
    async with aiohttp.ClientSession() as s:
        for sw in SWITCHES:
            for service in sw.services:
                url = sandboxes.observable_url if service == "observable" else sandboxes.posthog_url
                async with s.post(url + "/_sandbox/faults", data=sw.example) as r:
                    assert r.status == 200, (sw.name, service, await r.text())
                async with s.post(url + "/_sandbox/reset") as r:
                    assert r.status == 200
        async with s.post(sandboxes.posthog_url + "/_sandbox/faults", json={"public_list_results": True}) as r:
            assert r.status == 400
            assert "unknown switches" in (await r.json())["error"]


@pytest.mark.parametrize("argv", [["gateway", "sandbox", "--help"], ["gateway.sandbox.runner", "--help"]])
def test_sandbox_help_lists_every_switch(argv: list[str]) -> None:
    """`gateway sandbox --help` (and the runner's own) print every switch from the same table."""
    out = subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    for sw in SWITCHES:
        assert f"  {sw.name} [" in out
        assert sw.example in out
    doc = (ROOT / "docs" / "sandbox.md").read_text()
    for sw in SWITCHES:
        assert f"`{sw.name}`" in doc, f"docs/sandbox.md does not document {sw.name}"


# -- 4: a single document uses the stable field names and keeps everything else ------------------


async def test_notebook_document_has_updated_at_and_keeps_every_other_field(
    sandboxes: Sandboxes, gw: TestClient[Any, Any]
) -> None:
    """GET /v1/observable/notebooks/{id} is the upstream document with update_time named updated_at."""
    nb = next(n for n in sandboxes.observable_state.notebooks.values() if n.type == "public")
    async with aiohttp.ClientSession() as s, s.get(f"{sandboxes.observable_url}/document/{nb.id}") as r:
        assert r.status == 200
        upstream = await r.json()
    resp = await gw.get(f"/v1/observable/notebooks/{nb.id}")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["updated_at"] == upstream["update_time"] == nb.update_time
    assert "update_time" not in body
    assert {k: v for k, v in body.items() if k != "updated_at"} == {
        k: v for k, v in upstream.items() if k != "update_time"
    }
    assert body["nodes"] and body["owner"]["login"]  # the whole document: nothing a backup needs is lost


async def test_document_that_lost_the_renamed_field_is_shape_drift(
    sandboxes: Sandboxes, gw: TestClient[Any, Any]
) -> None:
    """keep_other_fields does not make a mapped field optional: a missing update_time is a 502 shape_drift."""
    nb = next(n for n in sandboxes.observable_state.notebooks.values() if n.type == "public")
    sandboxes.observable_state.apply_switches({"faults": {"/document/": {"drop_field": "update_time"}}})
    resp = await gw.get(f"/v1/observable/notebooks/{nb.id}")
    assert resp.status == 502
    err = (await resp.json())["error"]
    assert err["code"] == "shape_drift" and err["route"] == "observable_notebook" and "update_time" in err["message"]


def test_openapi_says_the_document_keeps_other_fields() -> None:
    doc = build_openapi(load_config(ROUTES))
    get = doc["paths"]["/v1/observable/notebooks/{id}"]["get"]
    schema = get["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is True
    assert "updated_at" in schema["properties"] and "update_time" not in schema["properties"]
    assert "updated_at" in schema["required"]


def test_keep_other_fields_needs_item(tmp_path: Path) -> None:
    """`gateway check` refuses keep_other_fields on a route that maps no single item."""
    comment = "      # the stable names the lists use; every other field of the document passes through as it is\n"
    text = ROUTES.read_text().replace(
        "    response:\n" + comment + "      item:\n        updated_at: update_time\n      keep_other_fields: true\n",
        "    response:\n      keep_other_fields: true\n",
    )
    assert text != ROUTES.read_text()
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="keep_other_fields passes the rest of a single document through"):
        load_config(path, env={})
