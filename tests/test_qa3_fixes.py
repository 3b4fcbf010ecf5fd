"""Fixes from the third hands-on QA pass that are not another module's: a PostHog create refusing a
field PostHog would ignore, driven through the shipped routes.yaml against the sandbox."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sandbox.runner import Sandboxes

PH_BASE = "/v1/posthog/projects/1/notebooks"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"titel": "typo"}, "titel: unknown field (writable: title, content, text_content, version, deleted)"),
        ({"title": "x", "short_id": "abc"}, "short_id: read-only (PostHog ignores it;"),
        ({"title": 3}, "title: must be a string or null, got a number"),
        ({"version": "2"}, "version: must be an integer"),
    ],
)
async def test_a_create_with_a_field_posthog_would_ignore_is_refused_and_never_sent(
    sandboxes: Sandboxes, gw: TestClient[Any, Any], body: dict[str, Any], problem: str
) -> None:
    """``{"titel": "typo"}`` made an untitled, empty notebook and answered 201 (PATCH already refused it)."""
    state = sandboxes.posthog_state
    before = len(state.visible(1))
    resp = await gw.post(PH_BASE, json=body)
    assert resp.status == 422, await resp.text()
    err = (await resp.json())["error"]
    assert err["code"] == "invalid_document" and err["route"] == "posthog_notebook_create"
    assert any(d.startswith(problem) for d in err["details"]), err["details"]
    assert state.count("POST", "/api/projects/1/notebooks/") == 0
    assert len(state.visible(1)) == before


async def test_a_create_of_writable_fields_or_of_nothing_is_forwarded(
    sandboxes: Sandboxes, gw: TestClient[Any, Any]
) -> None:
    content = {"type": "doc", "content": []}
    made = await gw.post(PH_BASE, json={"title": "New", "content": content, "text_content": ""})
    assert made.status == 201, await made.text()
    assert (await made.json())["title"] == "New"
    untitled = await gw.post(PH_BASE, json={})  # an untitled notebook, as PostHog makes one
    assert untitled.status == 201, await untitled.text()
    assert sandboxes.posthog_state.count("POST", "/api/projects/1/notebooks/") == 2


@pytest.mark.parametrize(
    ("method", "header"),
    [
        ("PATCH", ("If-Match", 'W/"000000000000000000000000"')),
        ("PATCH", ("If-None-Match", "*")),
        ("DELETE", ("If-Match", '"nope"')),
        ("PATCH", ("If-Unmodified-Since", "Sat, 05 Dec 2026 00:00:00 GMT")),
    ],
)
async def test_a_conditional_write_is_refused_never_forwarded_without_its_condition(
    sandboxes: Sandboxes, gw: TestClient[Any, Any], method: str, header: tuple[str, str]
) -> None:
    """The write was applied with its condition ignored: a read-modify-write expecting a 412 overwrote
    whatever changed in between."""
    state = sandboxes.posthog_state
    nb = state.visible(1)[0]
    title = nb.title
    body = {"title": "x"} if method == "PATCH" else None
    resp = await gw.request(method, f"{PH_BASE}/{nb.short_id}", json=body, headers=dict([header]))
    assert resp.status == 400, await resp.text()
    err = (await resp.json())["error"]
    assert err["code"] == "precondition_unsupported" and header[0] in err["message"]
    assert state.count("PATCH", f"/api/projects/1/notebooks/{nb.short_id}/") == 0
    assert nb.title == title and not nb.deleted
    # the same write without the condition goes through
    resp = await gw.request(method, f"{PH_BASE}/{nb.short_id}", json=body)
    assert resp.status in (200, 204), await resp.text()
