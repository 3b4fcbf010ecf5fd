"""docs/runbook.md performed as written: its sandbox switches, its `sed` edits of routes.yaml, the
reload of a running `gateway serve`, then the default backup, /metrics, the alert and /status.

The commands are read from the page itself, so the page cannot drift from what works: an edit
that no longer applies, a switch that no longer exists or an output that changed fails here.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_config
from sandbox.runner import Sandboxes, gateway_env
from tests.conftest import ROOT, ROUTES
from tests.processes import serve

RUNBOOK = (ROOT / "docs" / "runbook.md").read_text()
SCRIPT = ROOT / "examples" / "backup_notebooks.py"
FIRST, SECOND = RUNBOOK.split("## Second example", 1)


def _one(pattern: str, text: str) -> str:
    found = re.findall(pattern, text)
    assert len(found) == 1, (pattern, found)
    return str(found[0])


def _sed(section: str) -> str:
    """The section's `sed` command that 'makes exactly that edit'."""
    return _one(r"\(`(sed -i [^`]+)`\s+makes exactly that edit", section)


def _expected_answers(section: str) -> list[tuple[str, str]]:
    """Each `$ curl -s '127.0.0.1:8080/v1/...'` the section shows, with the line it prints."""
    return re.findall(r"\$ curl -s '127\.0\.0\.1:8080(/v1/[^']+)'\n(\{[^\n]+\})\n", section)


def _gauges(text: str, name: str) -> dict[str, float]:
    return {
        s.labels["route"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name
    }


def _route_down_alert_fires(metrics: str) -> bool:
    """RoutegateRouteDown's expression (deploy/prometheus/alerts.yml) on one scrape: both of its
    arms select only series where gateway_route_up == 0, so it is non-empty iff one route reads 0."""
    rules = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    assert "gateway_route_up == 0" in rules  # the expression this evaluates
    return any(v == 0 for v in _gauges(metrics, "gateway_route_up").values())


class Runbook:
    def __init__(self, sandboxes: Sandboxes, base: str, routes: Path, log: list[str], tmp: Path) -> None:
        self.sb, self.base, self.routes, self.log, self.tmp = sandboxes, base, routes, log, tmp
        self.reads = [r.name for r in load_config(ROUTES, env=gateway_env(sandboxes)).routes if r.method == "GET"]

    async def switch(self, section: str) -> None:
        """The section's `curl -X POST 127.0.0.1:PORT/_sandbox/faults -d '...'` (9001 Observable, 9002 PostHog)."""
        port, body = re.findall(r"127\.0\.0\.1:(900[12])/_sandbox/faults \\?\s*-d '([^']+)'", section)[0]
        url = self.sb.observable_url if port == "9001" else self.sb.posthog_url
        async with aiohttp.ClientSession() as s, s.post(f"{url}/_sandbox/faults", data=body) as r:
            assert r.status == 200, await r.text()

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(self.base + path) as r:
            return r.status, await r.text()

    async def answers_as_shown(self, section: str, which: int) -> None:
        """The section's `which`-th shown curl prints what the page says (ids and cursors aside)."""
        path, shown = _expected_answers(section)[which]
        status, text = await self.get(path)
        got, want = json.loads(text), json.loads(shown)
        if "error" in want:
            assert got == want, text
        else:
            assert status == 200 and set(got) == set(want) == {"items", "next_cursor"}, text
            assert set(got["items"][0]) == set(want["items"][0]) and got["next_cursor"], text

    async def edit_and_reload(self, section: str) -> None:
        """Run the section's `sed` on the served copy, check it as the page says, wait for the reload."""
        reloads = sum("config reloaded" in line for line in self.log)
        cmd = _sed(section).replace("/tmp/routes.yaml", str(self.routes))
        subprocess.run(["bash", "-c", cmd], check=True, timeout=30)
        env = {**os.environ, **gateway_env(self.sb)}
        check = subprocess.run(
            [sys.executable, "-m", "gateway", "check", str(self.routes)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0 and ": OK (" in check.stdout, check.stdout + check.stderr
        await _until(lambda: sum("config reloaded" in line for line in self.log) > reloads, "the reload", 20)

    async def metrics(self) -> str:
        return (await self.get("/metrics"))[1]

    async def all_reads_up(self) -> None:
        """Every read route's gateway_route_up is 1 (the probes run again right after a reload)."""
        deadline = time.monotonic() + 45
        while True:
            up = _gauges(await self.metrics(), "gateway_route_up")
            if all(up.get(name) == 1 for name in self.reads):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not every read route is up: {up}")
            await asyncio.sleep(0.5)

    async def green(self, section: str) -> None:
        """The end state the runbook promises: backup exit 0, every read route up, no alert, /status up."""
        args = _one(r"examples/backup_notebooks\.py (--gateway [^\n]+)", section).split()
        args[args.index("--gateway") + 1] = self.base
        args[args.index("--out") + 1] = str(self.tmp / "backup")
        shutil.rmtree(self.tmp / "backup", ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if k not in ("POSTHOG_PROJECT_ID", "ROUTEGATE_API_KEY")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 240)
        assert proc.returncode == 0, err.decode()[-3000:]
        shown = _one(r"backup complete: \d+ notebooks", section)
        assert shown in out.decode() + err.decode(), (shown, out.decode()[-500:])
        await self.all_reads_up()
        metrics = await self.metrics()
        assert not _route_down_alert_fires(metrics)
        page = (await self.get("/status"))[1]
        states = dict(re.findall(r'data-route="([^"]+)" data-state="([^"]+)"', page))
        assert {name: states.get(name) for name in self.reads} == dict.fromkeys(self.reads, "up"), states


async def _until(cond: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_runbook_route_move_and_pagination_change_end_green(sandboxes: Sandboxes, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    shutil.copy(ROUTES, routes)  # `cp routes.yaml /tmp/routes.yaml`
    async with serve(routes, gateway_env(sandboxes)) as (base, _proc, log):
        rb = Runbook(sandboxes, base, routes, log, tmp_path)
        await rb.all_reads_up()

        # first example: the list moves
        await rb.switch(FIRST)
        await rb.answers_as_shown(FIRST, 0)  # 1. notice: upstream_route_gone naming the route
        assert _gauges(await rb.metrics(), "gateway_route_up")["observable_notebooks"] == 0
        assert _route_down_alert_fires(await rb.metrics())
        await rb.edit_and_reload(FIRST)  # 2.-4. the edit, the check, the reload
        await rb.answers_as_shown(FIRST, 1)  # 5. verify
        await rb.green(FIRST)
        for kind in ("public", "shared", "private"):  # the default backup read every kind from its new route
            assert sandboxes.observable_state.count("GET", f"/user/{kind}") >= 1

        # second example: the pagination changes
        await rb.switch(SECOND)
        await rb.answers_as_shown(SECOND, 0)  # 1. notice: shape_drift naming the route, not a short list
        assert _gauges(await rb.metrics(), "gateway_route_up")["posthog_notebooks"] == 0
        await rb.edit_and_reload(SECOND)
        status, text = await rb.get("/v1/posthog/projects/1/notebooks?limit=1")
        assert status == 200 and json.loads(text)["next_cursor"], text
        await rb.green(FIRST)  # the same verification and backup as the first example's step 5
        assert sandboxes.posthog_state.requests_json()["by_path"]  # the sandbox was read throughout
