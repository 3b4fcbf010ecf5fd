"""``gateway demo``: both sandboxes and the gateway in one process, for a first look.

The demo sets the same env vars an operator would (upstream URLs and credentials),
then loads the real routes.yaml, so what you curl is exactly the shipped config.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from aiohttp import web

from gateway.config import ConfigError, load_config
from gateway.netloc import netloc
from sandbox import observable, posthog
from sandbox.runner import gateway_env, start_sandboxes, until_stopped

_WEEK_MS = 7 * 24 * 3600 * 1000


def curl_examples(base: str, notebook_id: str, short_id: str) -> list[str]:
    return [
        f"curl -s '{base}/v1/observable/notebooks?limit=5'",
        f"curl -s '{base}/v1/observable/notebooks?type=public,shared&all=true' | python3 -m json.tool | head -40",
        f"curl -s '{base}/v1/observable/users/alice/notebooks?limit=3'",
        f"curl -s '{base}/v1/observable/notebooks/{notebook_id}/version'",
        f"curl -si '{base}/v1/observable/notebooks/{notebook_id}/module' | head -12",
        f"curl -s '{base}/v1/posthog/projects/1/notebooks?limit=3'",
        f"curl -s '{base}/v1/posthog/projects/1/notebooks/{short_id}'",
        f"curl -si -X DELETE '{base}/v1/posthog/projects/1/notebooks/{short_id}'",
        f"curl -s -X POST '{base}/v1/observable/notebooks' -H 'Content-Type: application/json' "
        """-d '{"nodes": [{"id": 0}, {"id": 0}], "version": 1}'""",
        f"curl -s '{base}/metrics' | grep ^gateway_requests_total",
        f"curl -s '{base}/metrics' | grep ^gateway_route_up   # every route, probed in the background",
        f"xdg-open '{base}/status'   # the operator's page: routes up/down, why, since when",
    ]


async def _run(config_path: str, host: str, port: int, obs_port: int, ph_port: int) -> int:
    from gateway.server import build_app

    obs_state = observable.ObservableState(session_expiration_ms=int(time.time() * 1000) + _WEEK_MS)
    sandboxes = await start_sandboxes(
        host, obs_port, ph_port, observable_state=obs_state, posthog_state=posthog.PostHogState()
    )
    os.environ.update(gateway_env(sandboxes))
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(exc)
        await sandboxes.close()
        return 1
    # probes fill /status within seconds; the file is watched so the runbook's edit reloads the demo;
    # host: the Host the demo is reached by
    app = build_app(config, probes=True, watch=1.0, host=host)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        await sandboxes.close()
        raise
    # the demo is where routes.yaml edits are rehearsed: from now on, say when one is loaded, not only refused
    reload_log = logging.getLogger("gateway.reload")
    if not reload_log.isEnabledFor(logging.INFO):
        reload_log.setLevel(logging.INFO)
    # the port bound: --port 0 picks a free one
    port = next((a[1] for a in runner.addresses if isinstance(a, tuple) and len(a) >= 2), port)
    base = f"http://{netloc(host, port)}"
    nb = obs_state.by_kind("public")[0]
    ph = sandboxes.posthog_state
    short_id = ph.visible(1)[0].short_id
    print(
        f"routegate demo: gateway {base}  (Observable sandbox {sandboxes.observable_url}, "
        f"PostHog sandbox {sandboxes.posthog_url})\nTry:\n"
    )
    for cmd in curl_examples(base, nb.id, short_id):
        print(f"  {cmd}")
    print(
        f"\n{config_path} is watched: save an edit (docs/runbook.md) and the demo reloads it and says so, or"
        " keeps serving the old routes and says why if the edit is invalid.\nCtrl-C stops everything.",
        flush=True,
    )
    try:
        await until_stopped()
    finally:
        await runner.cleanup()
        await sandboxes.close()
    return 0


def run_demo(config_path: str, host: str, port: int, obs_port: int, ph_port: int) -> int:
    return asyncio.run(_run(config_path, host, port, obs_port, ph_port))
