"""GET /status: the operator's page, checked over HTTP and rendered in a real headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from gateway.config import ConfigError
from gateway.server import GATEWAY, build_app
from sandbox.observable import make_session_cookie
from sandbox.runner import Sandboxes
from tests.conftest import ROUTES, need_binary

FRESH = {"Cache-Control": "no-store"}


def row(page: str, route: str) -> str:
    m = re.search(rf'<tr data-route="{route}" data-state="(\w+)">(.*?)</tr>', page, re.S)
    assert m, f"no row for {route}"
    return m.group(0).replace("<wbr>", "")  # line-break chances in paths


async def test_status_lists_every_route_with_state_reason_and_fallback(make_gateway: Any, sandboxes: Sandboxes) -> None:
    fallback_yaml = ROUTES.read_text().replace(
        "      - GET /user/documents?types={type}\n",
        "      - GET /user/public?kind={type}\n      - GET /user/documents?types={type}\n",
    )
    gw = await make_gateway(fallback_yaml)
    assert (await gw.get("/v1/observable/notebooks?limit=1", headers=FRESH)).status == 200  # via the fallback
    sandboxes.posthog_state.apply_switches({"faults": {"/api/projects/1/notebooks": {"drop_field": "short_id"}}})
    assert (await gw.get("/v1/posthog/projects/1/notebooks", headers=FRESH)).status == 502

    resp = await gw.get("/status")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"
    page = await resp.text()
    config = gw.app[GATEWAY].runtime.config
    assert len(re.findall(r"<tr data-route=", page)) == len(config.routes)
    ok = row(page, "observable_notebooks")
    assert 'data-state="up"' in ok and "fallback #1" in ok
    assert html.escape("GET /user/documents?types={type}") in ok  # the target answering today
    assert html.escape("GET /user/public?kind={type}") in ok  # the primary that is gone
    down = row(page, "posthog_notebooks")
    assert 'data-state="down"' in down and "shape_drift" in down
    assert html.escape("upstream response lost field 'short_id'") in down
    assert 'data-state="unknown"' in row(page, "posthog_notebook_create")
    assert '<span class="state down">1 down</span>' in page and "<title>routegate: 1 route(s) down</title>" in page
    # nothing down, but not everything known yet: the headline does not say "all routes up"
    sandboxes.posthog_state.apply_switches({"faults": {"/api/projects/1/notebooks": None}})
    assert (await gw.get("/v1/posthog/projects/1/notebooks", headers=FRESH)).status == 200
    page = await (await gw.get("/status")).text()
    assert re.search(r"<title>routegate: \d+ route\(s\) up, \d+ not known yet</title>", page), page[:300]
    # the credential table dates the Observable session from its I cookie
    assert re.search(r'data-upstream="observable" data-credential-state="up">.*cookie:I', page)
    assert "<link" not in page and "src=" not in page  # no external assets
    assert sandboxes.observable_state.session_cookie not in page


EVIL_YAML = """\
upstreams:
  evil:
    base_url: ${EVIL_URL}
    auth: {bearer: {env: EVIL_KEY}}
routes:
  evil_route:
    stable: GET /v1/evil
    upstream: evil
    targets: ["GET /things"]
"""


async def test_upstream_words_cannot_inject_markup(make_gateway: Any) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"detail": '<img src=x onerror="alert(1)"><script>alert(2)</script>'}, status=403)

    app = web.Application()
    app.router.add_get("/things", refuse)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        gw = await make_gateway(EVIL_YAML, env={"EVIL_URL": str(server.make_url("")).rstrip("/"), "EVIL_KEY": "k"})
        assert (await gw.get("/v1/evil")).status == 502
        page = await (await gw.get("/status")).text()
    finally:
        await server.close()
    assert "<img" not in page and "<script>alert" not in page
    assert html.escape('<img src=x onerror="alert(1)">') in row(page, "evil_route")


async def dump_dom(chromium: str, url: str, screenshot: Path | None = None) -> str:
    with tempfile.TemporaryDirectory(prefix="routegate-chromium-") as profile:
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=2000",
        ]
        if screenshot is not None:
            args += [f"--screenshot={screenshot}", "--window-size=1400,900"]
        else:
            args.append("--dump-dom")
        proc = await asyncio.create_subprocess_exec(
            chromium,
            *args,
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode == 0, err.decode()[-2000:]
        return out.decode()


async def test_status_page_renders_in_a_real_browser(
    sandboxes: Sandboxes, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    chromium = need_binary("chromium")
    expires = time.time() + 30 * 3600  # inside the two-day warning window
    env = {**sandbox_env, "OBSERVABLE_SESSION": make_session_cookie(int(expires * 1000))}
    sandboxes.observable_state.session_cookie = env["OBSERVABLE_SESSION"]
    app = build_app(ROUTES, registry=CollectorRegistry(), env=env)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        gateway = app[GATEWAY]
        await gateway.prober.run_round()  # what the background prober does on `gateway serve`
        sandboxes.observable_state.apply_switches({"faults": {"/user/documents": {"status": 404}}})
        await gateway.prober.run_round(["observable_notebooks"])
        dom = await dump_dom(chromium, str(server.make_url("/status")))
        if os.environ.get("ROUTEGATE_SCREENSHOT"):
            await dump_dom(chromium, str(server.make_url("/status")), Path(os.environ["ROUTEGATE_SCREENSHOT"]))
    finally:
        await server.close()
    assert "<title>routegate: 1 route(s) down</title>" in dom
    broken = row(dom, "observable_notebooks")
    assert 'data-state="down"' in broken and ">DOWN<" in broken
    assert "upstream_route_gone" in broken
    assert "upstream 'observable' no longer serves GET /user/documents (404)" in broken  # DOM text
    for name in ("posthog_notebooks", "observable_notebook_version"):
        assert 'data-state="up"' in row(dom, name)
    # the inline script ran under the page's CSP: times read "… ago" / "in …"
    assert re.search(r'<time datetime="[^"]+" data-rel="" title="[^"]+">(\d+ s ago|just now)</time>', broken), broken
    cred = re.search(r'<tr data-upstream="observable" data-credential-state="(\w+)">(.*?)</tr>', dom, re.S)
    assert cred and cred.group(1) == "warn" and "renew soon" in cred.group(2)
    assert re.search(r">in (29|30) h<", cred.group(2)), cred.group(2)
    assert json.dumps(env["OBSERVABLE_SESSION"])[1:-1] not in dom


async def test_status_shows_a_refused_reload_until_a_good_one(make_gateway: Any, tmp_path: Path) -> None:
    gw = await make_gateway(ROUTES.read_text())
    gateway = gw.app[GATEWAY]
    path = Path(gateway.runtime.config.path)
    good = path.read_text()
    path.write_text(good.replace("style: offset", "style: offsett", 1))
    with contextlib.suppress(ConfigError):
        gateway.reload()
    page = await (await gw.get("/status")).text()
    refused = re.search(r'<div class="refused" id="refused">(.*?)</div>', page, re.S)
    assert refused, "a refused reload is shown"
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "offsett" in text)
    assert f"{path}:{line}: routes.posthog_notebooks.pagination.style:" in html.unescape(refused.group(1))
    path.write_text(good)
    gateway.reload()
    assert 'id="refused"' not in await (await gw.get("/status")).text()


async def test_status_badges_names_and_unknown_reasons_read_well(make_gateway: Any) -> None:
    gw = await make_gateway()
    page = await (await gw.get("/status")).text()
    assert '<span class="state zero">0 down</span>' in page, "no red badge for nothing down"
    assert ".route code{white-space:nowrap}" in page.replace("td.", "."), "route names are not broken mid-word"
    write = row(page, "posthog_notebook_delete")
    assert "a write route: never probed" in write and "never probed (write route)" in write
    read = row(page, "posthog_notebook")
    assert "probe not run yet, and no traffic" in read and "no traffic or probe yet" not in page
