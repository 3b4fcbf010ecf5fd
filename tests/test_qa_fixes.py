"""Defects a hands-on QA pass found: config checks, the CLI, the docs (each as its user meets it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, parse_config
from tests.conftest import ROOT

HEAD = """\
upstreams:
  api:
    base_url: {base_url}
    auth:
      bearer: {{env: API_KEY}}
routes:
  things:
    stable: {stable}
    upstream: api
    targets: [{target}]
"""


def _doc(
    *, base_url: str = "http://127.0.0.1:9", stable: str = "GET /v1/things/{id}", target: str = '"GET /things/{id}"'
) -> str:
    return HEAD.format(base_url=base_url, stable=stable, target=target)


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "routes.yaml", env or {"API_KEY": "k"})
    return [str(p) for p in info.value.problems]


SECRET = "phx_very_secret_value"


def test_an_environment_value_in_a_target_query_string_is_refused_without_echoing_it() -> None:
    text = _doc(target='"GET /things/{id}?api_key=${POSTHOG_API_KEY}"')
    got = problems(text, {"API_KEY": "k", "POSTHOG_API_KEY": SECRET})
    assert len(got) == 1, got
    assert got[0].startswith("routes.yaml:10: routes.things.targets[0]: a target's query string cannot take")
    assert "auth:" in got[0] and "POSTHOG_API_KEY" in got[0]
    assert SECRET not in got[0]


def test_an_environment_value_in_a_target_query_mapping_is_refused() -> None:
    text = _doc(target="{request: 'GET /things/{id}', query: {token: '${TOKEN}', kind: notebook}}")
    got = problems(text, {"API_KEY": "k", "TOKEN": SECRET})
    assert len(got) == 1, got
    assert "routes.things.targets[0].query.token: a target's query string cannot take" in got[0]
    assert SECRET not in got[0]


def test_an_environment_value_reaching_a_target_query_through_a_yaml_alias_is_refused() -> None:
    """Found by review: an anchor is expanded once, at its first place, so its alias in a query was not seen."""
    text = _doc(target="{request: 'GET /things/{id}', query: *h}").replace(
        "    auth:\n", "    headers: &h {X-Token: '${TOKEN}'}\n    auth:\n", 1
    )
    got = problems(text, {"API_KEY": "k", "TOKEN": SECRET})
    assert any("routes.things.targets[0].query.X-Token: a target's query string cannot take" in g for g in got), got
    assert all(SECRET not in g for g in got)


def test_an_environment_value_in_a_target_path_and_a_literal_query_stay_allowed() -> None:
    text = _doc(target='"GET /api/projects/${PROJECT_ID}/things/{id}?kind=notebook"')
    cfg = parse_config(text, "routes.yaml", {"API_KEY": "k", "PROJECT_ID": "42"})
    assert cfg.routes[0].targets[0].path.raw == "/api/projects/42/things/{id}"


def test_base_url_with_userinfo_is_refused_without_echoing_it() -> None:
    got = problems(_doc(base_url=f"http://user:{SECRET}@127.0.0.1:9"))
    assert len(got) == 1, got
    assert got[0].startswith("routes.yaml:3: upstreams.api.base_url: base_url cannot carry a user or password")
    assert SECRET not in got[0] and "user:" not in got[0]


@pytest.mark.parametrize(
    "stable",
    ["GET /metrics", "POST /metrics", "GET /status", "POST /admin/reload", "GET /openapi.json", "GET /healthz/"],
)
def test_a_stable_path_on_the_gateways_own_endpoint_is_refused(stable: str) -> None:
    got = problems(_doc(stable=stable, target='"GET /things"'))
    assert len(got) == 1, got
    assert got[0].startswith("routes.yaml:8: routes.things.stable: ")
    assert "the gateway's own endpoint" in got[0]


def test_a_query_in_a_stable_path_is_refused() -> None:
    got = problems(_doc(stable="GET /v1/q?y=1", target='"GET /things"'))
    assert got == [
        "routes.yaml:8: routes.things.stable: a stable path cannot carry a query or fragment (it would never "
        "match): declare query params under 'params:'"
    ]


def test_a_placeholder_twice_in_a_stable_path_is_refused() -> None:
    got = problems(_doc(stable="GET /v1/dup/{a}/{a}", target='"GET /things/{a}"'))
    assert got == [
        "routes.yaml:8: routes.things.stable: placeholder {a} appears twice in the stable path: give each its own name"
    ]


async def test_own_paths_are_exactly_what_the_app_registers() -> None:
    from gateway.config.names import OWN_PATHS
    from gateway.server import build_app
    from gateway.server.stable import StableResource

    app = build_app(parse_config(_doc(), "routes.yaml", {"API_KEY": "k"}), probes=False)
    resources = [r.resource for r in app.router.routes() if r.resource is not None]
    own = {res.canonical for res in resources if not isinstance(res, StableResource)}
    assert own == set(OWN_PATHS)


@pytest.mark.parametrize(
    "argv",
    [
        ("serve", "routes.yaml", "--port", "99999"),
        ("serve", "routes.yaml", "--port", "-1"),
        ("demo", "--port", "65536"),
        ("sandbox", "--observable-port", "70000"),
        ("sandbox", "--posthog-port", "99999"),
        ("demo", "--observable-port", "0", "--posthog-port", "123456"),
    ],
)
def test_a_port_outside_0_to_65535_is_a_usage_error(argv: tuple[str, ...]) -> None:
    from tests.helpers.cli import run

    out = run(*argv)
    assert out.returncode == 2, out.stderr
    assert "not a port number (0-65535" in out.stderr
    assert "serving" not in out.stdout


async def test_serve_on_port_0_prints_the_port_it_bound() -> None:
    import asyncio
    import os
    import re
    import sys

    import aiohttp

    from tests.conftest import ROOT, ROUTES

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        str(ROUTES),
        "--port",
        "0",
        "--no-probes",
        cwd=ROOT,
        env={**os.environ, "OBSERVABLE_API_KEY": "k", "POSTHOG_API_KEY": "k", "POSTHOG_PROJECT_ID": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        m = re.search(r"serving \d+ routes on http://127\.0\.0\.1:(\d+)$", line.strip())
        assert m is not None, line
        port = int(m.group(1))
        assert port != 0
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        await proc.wait()


def test_openapi_into_a_closed_pipe_exits_quietly() -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT, ROUTES

    # `routegate openapi routes.yaml | head -1`: the reader reads one line and closes
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "openapi", str(ROUTES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "OBSERVABLE_API_KEY": "k", "POSTHOG_API_KEY": "k", "POSTHOG_PROJECT_ID": "1"},
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().strip() == b"{"
        proc.stdout.close()
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    assert code == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def _render_routes(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "render_routes.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_render_routes_help_and_unknown_flags_write_nothing() -> None:
    target = ROOT / "deploy" / "k8s" / "config" / "routes.yaml"
    before = (target.stat().st_mtime_ns, target.read_bytes())
    out = _render_routes("--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: deploy/render_routes.py"), out
    assert "--check" in out.stdout and "--output" in out.stdout
    bad = _render_routes("--chek")
    assert bad.returncode == 2 and "unrecognized arguments: --chek" in bad.stderr
    assert (target.stat().st_mtime_ns, target.read_bytes()) == before
    assert "wrote" not in out.stdout + bad.stdout


def test_render_routes_writes_then_checks_the_output_it_is_given(tmp_path: Path) -> None:
    out_file = tmp_path / "routes.yaml"
    stale = _render_routes("--check", "--output", str(out_file))
    assert stale.returncode == 1 and "is stale" in stale.stderr
    wrote = _render_routes("--output", str(out_file))
    assert wrote.returncode == 0 and wrote.stdout == f"wrote {out_file}\n"
    assert out_file.read_text(encoding="utf-8").startswith("# GENERATED by deploy/render_routes.py")
    assert _render_routes("--check", "--output", str(out_file)).returncode == 0


def test_the_cursor_key_reference_says_what_derive_key_uses() -> None:
    from gateway.config import refdoc
    from gateway.pagination.cursor import derive_key

    page = refdoc.render()
    row = next(line for line in page.splitlines() if "`cursor_key`" in line)
    assert "config digest" not in row and "credentials only" in row, row
    # what the row says: the derived key is the credentials' alone, whatever the config
    assert derive_key(None, ["a", "b"]) == derive_key(None, ["b", "a"]) != derive_key(None, ["a", "c"])
    assert "config digest" not in (ROOT / "docs" / "configuration.md").read_text()


def test_routegate_check_refuses_a_secret_query_and_never_prints_the_secret(tmp_path: Path) -> None:
    from tests.helpers.cli import run

    routes = tmp_path / "routes.yaml"
    routes.write_text(
        _doc(base_url="http://u:pw-in-url@127.0.0.1:9", target='"GET /notebooks/{id}?api_key=${POSTHOG_API_KEY}"')
    )
    out = run("check", str(routes), env={"API_KEY": "k", "POSTHOG_API_KEY": SECRET})
    assert out.returncode == 1, out
    assert f"{routes}:3: upstreams.api.base_url: base_url cannot carry a user or password" in out.stderr
    assert f"{routes}:10: routes.things.targets[0]: a target's query string cannot take" in out.stderr
    assert SECRET not in out.stdout + out.stderr and "pw-in-url" not in out.stdout + out.stderr


def test_probe_with_its_report_unread_still_exits_with_its_verdict() -> None:
    """Found by review: a closed stdout turned every exit code into 0, so a cron job piping `probe` into a
    reader that went away saw broken routes as fine.  The verdict (exit 4, the stderr summary) stands."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT, ROUTES
    from tests.processes import free_port

    dead = {  # upstreams nothing listens on: every probe is broken at once
        "OBSERVABLE_API_URL": f"http://127.0.0.1:{free_port()}",
        "POSTHOG_URL": f"http://127.0.0.1:{free_port()}",
        "OBSERVABLE_TOKEN": "abcdefgh",
        "POSTHOG_API_KEY": "abcdefghij",
        "PYTHONUNBUFFERED": "1",  # as the image runs it: each line is written (and refused) at once
    }
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "probe", "--config", str(ROUTES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, **dead},
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before the first line
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
    assert code == 4, err
    assert "route(s) broken" in err and "Traceback" not in err, err
