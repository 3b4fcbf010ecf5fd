"""``gateway serve --workers 2``: two real processes on one port, /metrics summed across them."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.mmap_dict import MmapedDict

from sandbox.runner import Sandboxes
from tests.conftest import ROUTES
from tests.helpers.workers import _children, _fresh_get, _pids
from tests.processes import run_cli, serve

PH = "/v1/posthog/projects/1/notebooks"


@asynccontextmanager
async def supervisor(
    config: Path, env: dict[str, str], metrics_dir: Path | None
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """``gateway serve --workers 2``, once both workers answer."""
    extra = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)} if metrics_dir else {}
    args = ("--workers", "2", "--no-probes", "--watch-interval", "off", "--log-level", "warning")
    async with serve(config, {**env, **extra}, *args) as (base, proc, _lines):
        deadline = time.monotonic() + 20
        while len(await _pids(base, 10)) < 2:
            assert proc.returncode is None, "the supervisor exited"
            assert time.monotonic() < deadline, "two workers never answered"
            await asyncio.sleep(0.1)
        yield base, proc


async def _kill_one_worker(base: str, proc: asyncio.subprocess.Process) -> set[int]:
    """SIGKILL a worker; the two workers once its replacement answers."""
    victim = min(_children(proc.pid))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while True:
        workers = _children(proc.pid)
        if len(workers) == 2 and victim not in workers and set(await _pids(base, 30)) == workers:
            return workers
        assert time.monotonic() < deadline, workers
        await asyncio.sleep(0.2)


async def _metric(base: str, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(base + "/metrics") as r:
        text = await r.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _per_worker(metrics_dir: Path, name: str, route: str) -> dict[int, float]:
    """What each worker wrote to its own multiprocess file, read straight from the files."""
    out: dict[int, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(path)):
            if f'"{name}"' in key and f'"route": "{route}"' in key:
                out[pid] = out.get(pid, 0.0) + value
    return out


async def test_two_workers_share_the_port_and_metrics_sum_across_them(
    sandboxes: Sandboxes, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    async with supervisor(ROUTES, sandbox_env, metrics_dir) as (base, proc):
        workers = set(await _pids(base, 30))
        assert len(workers) == 2 and workers == _children(proc.pid)  # both serve, both are the supervisor's

        n = 40
        results = await asyncio.gather(*(_fresh_get(f"{base}{PH}?limit=2") for _ in range(n)))
        assert all(status == 200 and len(body["items"]) == 2 for status, body in results)

        # a request is counted just after its answer is written (gateway.server.framing._account): wait for that
        deadline = time.monotonic() + 5
        while sum((per_worker := _per_worker(metrics_dir, "gateway_requests_total", "posthog_notebooks")).values()) < n:
            assert time.monotonic() < deadline, per_worker
            await asyncio.sleep(0.05)
        assert set(per_worker) == workers and all(v > 0 for v in per_worker.values())  # each served some
        assert sum(per_worker.values()) == n
        # whichever worker answers /metrics reports the sum, every time
        for _ in range(4):
            assert await _metric(base, "gateway_requests_total", route="posthog_notebooks") == n
            assert await _metric(base, "gateway_request_duration_seconds_count", route="posthog_notebooks") == n
        # gauges are combined, not listed per pid
        assert await _metric(base, "gateway_route_up", route="posthog_notebooks") == 1
        async with aiohttp.ClientSession() as s, s.get(base + "/metrics") as r:
            assert 'pid="' not in await r.text()


async def test_sighup_reaches_every_worker_and_a_dead_worker_is_replaced(
    sandboxes: Sandboxes, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "routes.yaml"
    original = ROUTES.read_text()
    config.write_text(original)
    async with supervisor(config, sandbox_env, None) as (base, proc):
        status, _ = await _fresh_get(base + "/v1/posthog/projects/1/notebooks-renamed?limit=1")
        assert status == 404
        config.write_text(
            original.replace(
                "stable: GET /v1/posthog/projects/{project_id}/notebooks\n",
                "stable: GET /v1/posthog/projects/{project_id}/notebooks-renamed\n",
            )
        )
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:  # both workers reloaded: every fresh connection finds the new route
            statuses = [
                s
                for s, _ in await asyncio.gather(
                    *(_fresh_get(base + "/v1/posthog/projects/1/notebooks-renamed?limit=1") for _ in range(20))
                )
            ]
            if statuses == [200] * 20:
                break
            assert time.monotonic() < deadline, statuses
            await asyncio.sleep(0.2)

        workers = await _kill_one_worker(base, proc)

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)  # none outlives the supervisor


@pytest.mark.parametrize("args", [["--workers", "0"], ["--workers", "2", "--port", "0"]])
def test_bad_worker_options_are_usage_errors(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    assert main(["serve", str(ROUTES), "--port", "8999", *args]) == 2
    assert "--workers" in capsys.readouterr().err


async def test_a_second_gateway_with_workers_does_not_join_one_already_on_the_port(
    sandboxes: Sandboxes, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """SO_REUSEPORT would let it, and the kernel would split the traffic between the two."""
    async with supervisor(ROUTES, sandbox_env, None) as (base, proc):
        port = base.rsplit(":", 1)[1]
        code, _, err = await run_cli(
            "serve", str(ROUTES), "--port", port, "--workers", "2", "--no-probes", env=sandbox_env
        )
        assert code == 3 and "cannot listen" in err and "in use" in err
        assert set(await _pids(base, 20)) == _children(proc.pid)  # only the first gateway's workers answer


async def test_a_port_the_workers_cannot_bind_stops_the_supervisor(sandbox_env: dict[str, str]) -> None:
    with socket.socket() as taken:  # listening without SO_REUSEPORT: nobody else may bind it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = await run_cli(
            "serve",
            str(ROUTES),
            "--port",
            str(port),
            "--workers",
            "2",
            "--no-probes",
            "--watch-interval",
            "off",
            env=sandbox_env,
        )
    assert code == 3  # found before any worker starts: no restart loop, as with one process
    assert "cannot listen" in err and "serving" not in out  # nothing claims to serve a port it did not get


OPS_KEY = "ak_ops_" + "o" * 24
STABLE_NOTEBOOKS = "stable: GET /v1/posthog/projects/{project_id}/notebooks\n"
STABLE_RENAMED = "stable: GET /v1/posthog/projects/{project_id}/notebooks-renamed\n"
ADMIN = "\nadmin:\n  keys:\n    ops: {key: {env: OPS_KEY}}\n"


async def _admin(base: str, path: str, **kw: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {OPS_KEY}"}
    async with aiohttp.ClientSession() as s, s.post(base + path, headers=headers, **kw) as r:
        return r.status, await r.json()


async def test_admin_reload_and_purge_reach_every_worker_before_they_answer(
    sandboxes: Sandboxes, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "routes.yaml"
    original = ROUTES.read_text() + ADMIN
    config.write_text(original)
    tmp = Path(tempfile.mkdtemp(prefix="rg-", dir="/tmp"))  # short: Unix socket paths are limited
    env = {**sandbox_env, "ROUTEGATE_CACHE": "on", "OPS_KEY": OPS_KEY, "TMPDIR": str(tmp), "RUNTIME_DIRECTORY": ""}
    env["XDG_RUNTIME_DIR"] = ""  # the sockets go to TMPDIR
    url = f"{PH}?limit=1"
    renamed = "/v1/posthog/projects/1/notebooks-renamed?limit=1"
    try:
        async with supervisor(config, env, None) as (base, proc):
            # each worker has its socket, in a directory only the gateway's user may enter
            (directory,) = {p.parent for p in tmp.glob("routegate-workers-*/*.sock")}
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
            assert {int(p.stem) for p in directory.glob("*.sock")} == _children(proc.pid)

            # both workers cache the first notebook's title
            states = [(await _fresh_get_full(base + url))[1] for _ in range(40)]
            assert states[-10:] == ["HIT"] * 10, states
            nb = sandboxes.posthog_state.visible(1)[0]
            before = nb.title
            nb.title = "renamed upstream"
            assert {(await _fresh_get_full(base + url))[2] for _ in range(10)} == {before}  # still cached

            status, body = await _admin(base, "/admin/cache/purge", json={"route": "posthog_notebooks"})
            assert status == 200 and body["workers"] == 2 and body["deleted"] == 2, body
            # no worker still has the old title: each purged before the call was answered
            assert {(await _fresh_get_full(base + url))[2] for _ in range(20)} == {"renamed upstream"}

            config.write_text(original.replace(STABLE_NOTEBOOKS, STABLE_RENAMED))
            status, body = await _admin(base, "/admin/reload")
            assert status == 200 and body["workers"] == 2, body
            results = await asyncio.gather(*(_fresh_get(base + renamed) for _ in range(20)))
            assert [s for s, _ in results] == [200] * 20  # at once, on every worker: no waiting for a watcher

            # a worker that dies after the file broke is replaced by one serving what the others serve
            config.write_text("routes: [not, a, mapping\n")
            status, body = await _admin(base, "/admin/reload")
            assert status == 422 and body["error"]["code"] == "invalid_config"
            workers = await _kill_one_worker(base, proc)
            results = await asyncio.gather(*(_fresh_get(base + renamed) for _ in range(20)))
            assert [s for s, _ in results] == [200] * 20
            # the dead worker's socket is gone, the replacement's is there
            assert {int(p.stem) for p in directory.glob("*.sock")} == workers

            # a relayed reload applies the text it carries (the file is broken now), is not relayed
            # again, and is refused if a newer text was accepted since it was sent
            one = directory / f"{min(workers)}.sock"
            assert await _relayed_reload(one, original) == (409, "stale_relay")
            assert await _relayed_reload(one, (directory / "last-good.yaml").read_text()) == (200, 1)

            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
        assert list(tmp.iterdir()) == []  # the sockets' and the metrics' directories are removed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _relayed_reload(socket_path: Path, text: str) -> tuple[int, Any]:
    """A reload as another worker relays it: (status, workers reached or the error code)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path))) as s,
        s.post(
            "http://worker/admin/reload",
            data=text,
            headers={"Authorization": f"Bearer {OPS_KEY}", "Content-Type": "application/yaml"},
        ) as r,
    ):
        body = await r.json()
        return r.status, body["workers"] if r.status == 200 else body["error"]["code"]


async def _fresh_get_full(url: str) -> tuple[int, str, str | None]:
    """(status, X-Cache, the first item's title) of one request on a new connection."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s,
        s.get(url) as r,
    ):
        body = await r.json()
        return r.status, r.headers.get("X-Cache", ""), body["items"][0]["title"]
