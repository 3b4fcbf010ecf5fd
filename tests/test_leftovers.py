"""Issues 13/14/16 leftovers: the sandbox switch table, stable single-document fields, hostile logs."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from gateway.sandbox.runner import Sandboxes
from gateway.sandbox.switches import SWITCHES, names_for
from tests.conftest import ROOT


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
