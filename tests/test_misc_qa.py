"""QA defects (task misc): sandboxes true to the real upstreams, a PATCH field PostHog would ignore,
an unusable credential file, a YAML error's lines, an IPv6 address in the printed URL."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from gateway.config import ConfigError, parse_config
from sandbox.runner import Sandboxes
from tests.conftest import ROOT, ROUTES, GatewayFactory

PH_BASE = "/v1/posthog/projects/1/notebooks"
DOCUMENT_FIELDS = {"publish_level", "trashed", "roles", "latest_version", "creator", "authors", "files"}


def _bearer(sandboxes: Sandboxes) -> dict[str, str]:
    return {"Authorization": f"Bearer {sorted(sandboxes.posthog_state.api_keys)[0]}"}


async def _exec(*args: str, env: dict[str, str], until: str | None = None) -> tuple[int | None, str, str]:
    """``python -m gateway ARGS`` with exactly ``env`` (no OBSERVABLE_*/POSTHOG_* of this process);
    with ``until``: stopped once a stdout line holds it (a server), which is then the whole stdout."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OBSERVABLE_", "POSTHOG_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, cwd=ROOT, env={**base, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(60):
            if until is None:
                out, err = await proc.communicate()
                return proc.returncode, out.decode(), err.decode()
            while True:
                line = (await proc.stdout.readline()).decode()
                if until in line or not line:
                    return None, line, ""
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


# -- 1: the sandboxes as the real services are ------------------------------------------------------


async def test_posthog_environments_path_is_the_projects_api_with_deprecation_headers(sandboxes: Sandboxes) -> None:
    """``/api/environments/{id}/...`` is PostHog's in-process alias of ``/api/projects/{id}/...``."""
    nb = sandboxes.posthog_state.visible(1)[0]
    async with aiohttp.ClientSession(headers=_bearer(sandboxes)) as s:
        for tail in ("notebooks/", "notebooks", f"notebooks/{nb.short_id}/", f"notebooks/{nb.short_id}/activity"):
            async with s.get(f"{sandboxes.posthog_url}/api/projects/1/{tail}") as r:
                assert r.status == 200 and "Deprecation" not in r.headers and "Sunset" not in r.headers
                current = await r.json()
            async with s.get(f"{sandboxes.posthog_url}/api/environments/1/{tail}") as r:
                assert r.status == 200, (tail, await r.text())
                assert r.headers["Deprecation"] and r.headers["Sunset"].endswith(" GMT")
                alias = await r.json()
            if current.get("next"):  # the list's absolute links stay on the path asked
                assert f"/api/environments/1/{tail}?" in alias.pop("next")
                current.pop("next")
            assert alias == current, tail
        async with s.patch(
            f"{sandboxes.posthog_url}/api/environments/1/notebooks/{nb.short_id}/", json={"title": "Via alias"}
        ) as r:
            assert r.status == 200 and r.headers["Deprecation"] and (await r.json())["title"] == "Via alias"
        async with s.get(f"{sandboxes.posthog_url}/api/environments/1/notebooks/", headers={"Authorization": ""}) as r:
            assert r.status == 401 and r.headers["Deprecation"]  # the alias answers errors the same way too
            assert (await r.json())["code"] == "not_authenticated"


async def test_a_route_moved_to_the_environments_alias_keeps_working_through_the_gateway(
    sandboxes: Sandboxes, make_gateway: GatewayFactory
) -> None:
    """The operator's rehearsal: the shipped routes with PostHog targets on /api/environments/."""
    moved = ROUTES.read_text().replace("/api/projects/{project_id}/", "/api/environments/{project_id}/")
    assert moved.count("/api/environments/") >= 5
    gw = await make_gateway(moved)
    state = sandboxes.posthog_state
    page = await (await gw.get(PH_BASE, params={"limit": "3"})).json()
    assert [i["id"] for i in page["items"]] == [nb.short_id for nb in state.visible(1)[:3]], page
    resp = await gw.get(f"{PH_BASE}/{page['items'][0]['id']}")
    assert resp.status == 200 and (await resp.json())["id"] == page["items"][0]["id"]
    assert state.count("GET", "/api/environments/1/notebooks/") == 1


async def test_observable_document_has_the_real_fields_and_no_type(
    sandboxes: Sandboxes, gw: TestClient[Any, Any]
) -> None:
    state = sandboxes.observable_state
    for kind in ("public", "shared", "private", "trash"):
        nb = state.by_kind(kind)[0]
        resp = await gw.get(f"/v1/observable/notebooks/{nb.id}")
        assert resp.status == 200, await resp.text()
        doc = await resp.json()
        assert "type" not in doc and set(doc) >= DOCUMENT_FIELDS, kind
        assert doc["publish_level"] == ("public" if kind == "public" else None)
        assert doc["trashed"] is (kind == "trash")
        assert doc["latest_version"] == doc["version"] == nb.version
        assert doc["creator"]["login"] == doc["owner"]["login"] == "demo"
        assert [a["login"] for a in doc["authors"]] == ["demo"]
        assert doc["roles"] == [] and doc["files"] == []
        assert {"id", "value", "pinned", "mode", "data", "name"} == set(doc["nodes"][0])
    # the lists' `type` is the one asked for, not read from any document
    items = (await (await gw.get("/v1/observable/notebooks", params={"type": "trash"})).json())["items"]
    assert items and {i["type"] for i in items} == {"trash"}


async def test_posthog_patch_stores_text_content_as_sent_and_the_list_has_no_maximum_limit(
    sandboxes: Sandboxes, gw: TestClient[Any, Any]
) -> None:
    state = sandboxes.posthog_state
    nb = state.visible(1)[2]
    before = nb.text_content
    content = {"type": "doc", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "New"}]}]}
    resp = await gw.patch(f"{PH_BASE}/{nb.short_id}", json={"content": content, "version": nb.version})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["content"] == content and body["text_content"] == before  # PostHog derives nothing
    resp = await gw.patch(f"{PH_BASE}/{nb.short_id}", json={"text_content": "New"})
    assert (await resp.json())["text_content"] == "New"
    async with (
        aiohttp.ClientSession(headers=_bearer(sandboxes)) as s,
        s.get(f"{sandboxes.posthog_url}/api/projects/1/notebooks/?limit=240") as r,
    ):
        assert len((await r.json())["results"]) == 240


async def test_the_throttle_switch_says_no_retry_after_and_none_is_sent(sandboxes: Sandboxes) -> None:
    code, out, _ = await _exec("sandbox", "--help", env={})
    assert code == 0
    text = " ".join(out.split())
    assert "429 throttled (no Retry-After)" in text and "429 with Retry-After" not in text
    assert "429` with `Retry-After`" not in (ROOT / "docs" / "sandbox.md").read_text()
    sandboxes.posthog_state.apply_switches({"rate_limit_per_minute": 1})
    async with aiohttp.ClientSession(headers=_bearer(sandboxes)) as s:
        for status in (200, 429):
            async with s.get(f"{sandboxes.posthog_url}/api/projects/1/notebooks/") as r:
                assert r.status == status
                body = await r.json()
        assert "Retry-After" not in r.headers
        assert body["type"] == "throttled_error" and body["detail"].startswith("Request was throttled. Expected")


# -- 2: a PATCH field PostHog would ignore ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"titel": "x"}, "titel: unknown field (writable: title, content, text_content, version, deleted)"),
        ({"title": "x", "short_id": "abc"}, "short_id: read-only (PostHog ignores it;"),
        ({"updated_at": "2024-01-01T00:00:00Z"}, "updated_at: read-only"),
        ({"deleted": "yes"}, "deleted: must be true or false, got a string"),
        ({"title": 3}, "title: must be a string or null, got a number"),
        ({"text_content": ["a"]}, "text_content: must be a string or null, got a list"),
        ({}, "body: nothing to update (writable: title, content, text_content, version, deleted)"),
    ],
)
async def test_a_patch_with_a_field_posthog_would_ignore_is_refused_and_never_sent(
    sandboxes: Sandboxes, gw: TestClient[Any, Any], body: dict[str, Any], problem: str
) -> None:
    state = sandboxes.posthog_state
    nb = state.visible(1)[0]
    title, modified = nb.title, nb.last_modified_us
    resp = await gw.patch(f"{PH_BASE}/{nb.short_id}", json=body)
    assert resp.status == 422, await resp.text()
    err = (await resp.json())["error"]
    assert err["code"] == "invalid_update" and err["route"] == "posthog_notebook_update"
    assert any(d.startswith(problem) for d in err["details"]), err["details"]
    assert state.count("PATCH", f"/api/projects/1/notebooks/{nb.short_id}/") == 0
    assert (nb.title, nb.last_modified_us) == (title, modified)


async def test_a_patch_of_every_writable_field_is_forwarded(sandboxes: Sandboxes, gw: TestClient[Any, Any]) -> None:
    nb = sandboxes.posthog_state.visible(1)[1]
    content = {"type": "doc", "content": []}
    body = {"title": "T", "content": content, "text_content": "", "version": nb.version, "deleted": False}
    resp = await gw.patch(f"{PH_BASE}/{nb.short_id}", json=body)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["title"] == "T" and nb.title == "T"
    resp = await gw.patch(f"{PH_BASE}/{nb.short_id}", json={"title": None})
    assert resp.status == 200 and nb.title is None


# -- 3: a credential file that is set but unusable ---------------------------------------------------------

SECRET = "Isecret.s3cr3tSignatureValue"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"I": "' + SECRET + '", "T": "tok",}\n', "is not valid JSON (Expecting property name enclosed in double"),
        (None, ": no such file"),
        ('{"session": "' + SECRET + '", "token": "tok"}', "has no 'I' key"),
        ('[{"name": "S", "value": "' + SECRET + '"}]', "has no cookie named 'I' with a value"),
        ("", "is not valid JSON"),
    ],
)
async def test_an_unusable_cookies_file_is_named_with_why(
    sandboxes: Sandboxes, tmp_path: Path, content: str | None, reason: str
) -> None:
    path = tmp_path / "cookies.json"
    if content is not None:
        path.write_text(content)
    env = {
        "OBSERVABLE_COOKIES_FILE": str(path),
        "OBSERVABLE_API_URL": sandboxes.observable_url,
        "POSTHOG_URL": sandboxes.posthog_url,
        "POSTHOG_API_KEY": "phx_x",
    }
    where = f"OBSERVABLE_COOKIES_FILE={path}"
    code, out, err = await _exec("check", str(ROUTES), env=env)
    assert code == 0, err
    warning = next(ln for ln in err.splitlines() if "upstreams.observable.auth" in ln)
    assert f"cookie I: {where}" in warning and reason in warning, warning
    assert "set OBSERVABLE_SESSION" not in warning and SECRET not in err + out

    code, out, err = await _exec("probe", str(ROUTES), "--route", "observable_notebooks", env=env)
    assert code == 4, (out, err)
    assert "has no usable credentials (" in out and f"cookie I: {where}" in out and reason in out, out
    assert "no credentials configured" not in out and SECRET not in out + err
    assert sandboxes.observable_state.count("GET", "/user/documents") == 0  # nothing sent without them


async def test_a_usable_cookies_file_still_works_and_an_unset_one_still_says_what_to_set(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    obs = sandboxes.observable_state
    path = tmp_path / "cookies.json"
    path.write_text(f'{{"I": "{obs.session_cookie}", "T": "{obs.token}"}}')
    env = {"OBSERVABLE_API_URL": sandboxes.observable_url, "POSTHOG_URL": sandboxes.posthog_url}
    code, out, err = await _exec(
        "probe", str(ROUTES), "--route", "observable_notebooks", env={**env, "OBSERVABLE_COOKIES_FILE": str(path)}
    )
    assert code == 0 and out.startswith("OK"), (out, err)
    code, out, err = await _exec("probe", str(ROUTES), "--route", "observable_notebooks", env=env)
    assert code == 4 and "no credentials configured (cookie I: set OBSERVABLE_SESSION or" in out, out


async def test_a_key_file_with_a_bom_is_read_and_one_with_two_lines_is_named_with_why(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    """A BOM (Notepad, PowerShell) is no part of a key; a second line is the file written wrong, said with its
    name by ``check`` and the probe, never as a header that cannot be sent, nor as a key to renew."""
    key = next(iter(sandboxes.posthog_state.api_keys))
    path = tmp_path / "key"
    env = {
        "POSTHOG_API_KEY_FILE": str(path),
        "POSTHOG_URL": sandboxes.posthog_url,
        "OBSERVABLE_API_URL": sandboxes.observable_url,
    }
    path.write_bytes(b"\xef\xbb\xbf" + key.encode() + b"\r\n")
    code, out, err = await _exec("probe", str(ROUTES), "--route", "posthog_notebooks", env=env)
    assert code == 0 and out.startswith("OK"), (out, err)
    path.write_text(f"{key}\nphx_second\n")
    code, out, err = await _exec("check", str(ROUTES), env=env)
    warning = next(ln for ln in err.splitlines() if "upstreams.posthog.auth" in ln)
    assert f"POSTHOG_API_KEY_FILE={path} holds more than one line" in warning and key not in err + out, warning
    code, out, err = await _exec("probe", str(ROUTES), "--route", "posthog_notebooks", env=env)
    assert code == 4 and "has no usable credentials (" in out and "holds more than one line" in out, out
    assert key not in out + err and "phx_second" not in out + err


# -- 4: a YAML error names the right lines ----------------------------------------------------------------

ANCHORS = """\
version: 1
upstreams:
  u: {base_url: "http://127.0.0.1:9"}
routes:
  a:
    stable: GET /v1/a
    upstream: u
    targets: [GET /a]
    response: {item: &x {id: id}}
  b:
    stable: GET /v1/b
    upstream: u
    targets: [GET /b]
    response: {item: &x {id: id}}
"""


async def test_check_names_a_duplicate_anchors_first_definition(tmp_path: Path) -> None:
    path = tmp_path / "anchor.yaml"
    path.write_text(ANCHORS)
    code, out, err = await _exec("check", str(path), env={})
    assert code == 1, (out, err)
    assert f"\n  {path}:14: (syntax): duplicate anchor 'x' (first defined on line 9); hint: " in err, err
    assert "second occurrence" not in err


def _syntax(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "routes.yaml", {})
    (problem,) = info.value.problems
    return str(problem)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # an unclosed quote is noticed at the end of the file: named where it was opened
            'upstreams:\n  u: {base_url: "http://x}\nroutes: {}\n',
            r"routes.yaml:2: \(syntax\): found unexpected end of stream \(line 4, column 1\), while scanning a quoted"
            r" scalar from line 2, column 17; hint: a quote opened on this line is never closed",
        ),
        (  # a key without ':' is noticed on the next line
            "upstreams: {}\nroutes\nversion: 1\n",
            r"routes.yaml:2: \(syntax\): could not find expected ':' \(line 3, column 1\), while scanning a simple"
            r" key from line 2, column 1; hint: this line's key has no ':' after it",
        ),
        (  # a flow's slip may be on any of its lines: the problem's line, the flow's start named too
            "upstreams:\n  api: {base_url: x\nroutes: []\n",
            r"routes.yaml:3: \(syntax\): expected ',' or '}', but got ':' \(line 3, column 7\), while parsing a flow"
            r" mapping from line 2, column 8; hint: the \[ or {",
        ),
        (  # a bad indent: the line of the problem, the block it breaks named with its own
            "upstreams:\n  u: {}\n routes: {}\n",
            r"routes.yaml:3: \(syntax\): expected <block end>, but found '<block mapping start>' \(line 3, column 2\),"
            r" while parsing a block mapping from line 1, column 1; hint: this line's indentation",
        ),
    ],
)
def test_a_yaml_error_with_a_context_names_each_at_its_own_line(text: str, expected: str) -> None:
    got = _syntax(text)
    assert re.match(expected, got), got


# -- 5: an IPv6 address in a printed URL ---------------------------------------------------------------


async def test_serve_prints_an_ipv6_address_in_brackets(sandbox_env: dict[str, str]) -> None:
    _, line, _ = await _exec("serve", str(ROUTES), "--host", "::1", "--port", "0", env=sandbox_env, until="serving")
    assert re.search(r"serving \d+ routes on http://\[::1\]:\d+$", line.strip()), line


async def test_demo_prints_an_ipv6_address_in_brackets() -> None:
    args = ("demo", str(ROUTES), "--host", "::1", "--port", "0", "--observable-port", "0", "--posthog-port", "0")
    _, line, _ = await _exec(*args, env={}, until="routegate demo: gateway")
    assert re.match(r"routegate demo: gateway http://\[::1\]:\d+ ", line), line
    assert "http://[::1]:" in line.split("Observable sandbox", 1)[1], line  # the sandboxes' URLs too
