"""The ``gateway`` command: check, routes, help, and serve on a real socket."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from gateway import __version__
from sandbox.runner import Sandboxes
from tests.conftest import ROOT, ROUTES
from tests.helpers.cli import run
from tests.processes import free_port, serve


def test_check_accepts_the_shipped_file() -> None:
    out = run("check", str(ROUTES))
    assert out.returncode == 0, out.stderr
    assert "OK (2 upstreams, 12 routes" in out.stdout


def test_check_lists_every_problem_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "upstreams:\n  a: {base_url: 'http://x', retry_count: 3}\n"
        "routes:\n  r: {stable: GET /x, upstream: b, targets: ['GET /x']}\n"
    )
    out = run("check", str(bad))
    assert out.returncode == 1
    assert f"{bad}:2: upstreams.a.retry_count: unknown key 'retry_count'" in out.stderr
    assert f"{bad}:4: routes.r.upstream: no upstream named 'b'" in out.stderr
    assert "2 problem(s)" in out.stderr


def test_routes_prints_the_table() -> None:
    out = run("routes", "--config", str(ROUTES))
    assert out.returncode == 0
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("posthog_notebook_delete"))
    assert "DELETE /v1/posthog/projects/{project_id}/notebooks/{short_id}" in line
    assert "PATCH /api/projects/{project_id}/notebooks/{short_id}/" in line
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("observable_notebooks "))
    assert line.endswith("GET /user/documents?types={type}"), "the target's query part is shown"


def test_help_on_every_command() -> None:
    assert "Exit codes" in run("--help").stdout
    for cmd in ("serve", "check", "routes", "sandbox", "demo"):
        out = run(cmd, "--help")
        assert out.returncode == 0 and "usage: routegate" in out.stdout, cmd
    assert run("frobnicate").returncode == 2


async def test_serve_on_a_real_socket(sandboxes: Sandboxes, sandbox_env: dict[str, str]) -> None:
    async with (
        serve(ROUTES, sandbox_env) as (base, _proc, _lines),
        aiohttp.ClientSession() as session,
        session.get(f"{base}/v1/posthog/projects/2/notebooks?all=true") as resp,
    ):
        body = await resp.json()
        assert resp.status == 200
        assert len(body["items"]) == 12


async def test_serve_says_it_is_serving_once_it_listens(sandbox_env: dict[str, str]) -> None:
    """The line comes once the port is bound (a failed bind prints none: tests/test_limits.py)."""
    async with serve(ROUTES, sandbox_env, "--no-probes", stdout=True) as (base, proc, _lines):
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line == f"routegate {__version__} serving 12 routes on {base}\n"


def test_the_routegate_command_and_its_gateway_alias_are_installed() -> None:
    scripts = Path(sys.executable).parent
    for name in ("routegate", "gateway"):
        out = subprocess.run([str(scripts / name), "--version"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.startswith("routegate "), name


def test_every_option_says_what_it_does_and_its_default() -> None:
    for cmd in ("serve", "probe", "check", "openapi", "routes", "sandbox", "demo"):
        text = run(cmd, "--help").stdout
        options = text[text.index("options:") :]
        entries = [e for e in options.split("\n  -")[1:] if not e.startswith("h, --help")]
        assert entries, cmd
        for entry in entries:
            assert "default" in entry, f"{cmd}: -{entry.strip()}"
        assert "Exit codes" not in text, "the exit codes are printed once, by routegate --help"


def test_sandbox_and_demo_on_a_busy_port_say_so_in_one_line_and_exit_3() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args in (
            ("sandbox", "--observable-port", str(port), "--posthog-port", "0"),
            ("demo", "--port", str(port), "--observable-port", "0", "--posthog-port", "0"),
        ):
            out = run(*args)
            assert out.returncode == 3, (args, out.stderr)
            assert out.stdout == "", "nothing for `gateway sandbox > env; source env` to mistake for exports"
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
            assert "cannot listen" in lines[0] and str(port) in lines[0], lines[0]


def test_check_warns_when_an_upstream_credential_has_no_value() -> None:
    """Valid, but every call would be a 502: say so before the operator finds out from a script."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTHOG_", "OBSERVABLE_"))}
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(ROUTES)], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert out.returncode == 0 and "OK" in out.stdout
    assert (
        f"{ROUTES}: warning: upstreams.posthog.auth: no value "
        "(bearer token: set POSTHOG_API_KEY or POSTHOG_API_KEY_FILE); posthog_notebooks," in out.stderr
    )
    assert "will answer 502 upstream_credentials_missing" in out.stderr
    assert "upstreams.observable.auth: no value (cookie I: set OBSERVABLE_SESSION or" in out.stderr
    env.update(POSTHOG_API_KEY="phx_x", OBSERVABLE_SESSION="s", OBSERVABLE_TOKEN="t")
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(ROUTES)], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert out.returncode == 0 and "warning" not in out.stderr, out.stderr


def test_every_command_that_logs_checks_its_log_level_the_same_way() -> None:
    for cmd in ("serve", "demo"):
        out = run(cmd, "--log-level", "loud")
        assert out.returncode == 2, cmd
        assert "argument --log-level: 'loud' is not one of debug, info, warning, error" in out.stderr, cmd


async def test_the_demo_says_when_a_saved_edit_is_loaded_not_only_when_it_is_refused(tmp_path: Path) -> None:
    """The demo is where routes.yaml edits are rehearsed; at its quiet level (warning) a reload still shows."""
    config = tmp_path / "routes.yaml"
    config.write_text(ROUTES.read_text())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "demo", str(config), "--port", str(free_port()),
        "--observable-port", "0", "--posthog-port", "0",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while b"Ctrl-C stops everything" not in await proc.stdout.readline():
                pass
            text = config.read_text()
            config.write_text(text.replace("description: A project's notebooks", "description: Edited notebooks", 1))
            lines: list[str] = []
            while not any("config reloaded from" in ln for ln in lines):
                lines.append((await proc.stderr.readline()).decode())
        reloaded = json.loads(next(ln for ln in lines if "config reloaded from" in ln))
        assert reloaded["level"] == "info" and str(config) in reloaded["message"]
        assert not any('"event":"request"' in ln for ln in lines), "no access lines at the demo's level"
    finally:
        proc.terminate()
        await proc.wait()
