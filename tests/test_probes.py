"""Contract probes and expected shapes: config validation, live shape drift, the prober's rounds,
its background loop (interval, jitter, bounded concurrency) and ``gateway probe`` for cron/CI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from gateway.config import ConfigError, load_config, parse_config
from gateway.server import GATEWAY, Gateway, build_app
from sandbox.runner import Sandboxes
from tests.conftest import ROUTES
from tests.processes import run_cli

FRESH = {"Cache-Control": "no-store"}


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "routes.yaml", {})
    return [str(p) for p in info.value.problems]


BASE = """\
upstreams:
  api:
    base_url: http://127.0.0.1:9
    auth:
      cookies: {{S: {{env: SESSION}}}}
{expiry}
{probes}
routes:
  things:
    stable: GET /v1/things
    upstream: api
    pagination: {{style: before, param: before, field: updated}}
    targets: ["GET /things"]
    probe: true
  thing:
    stable: GET /v1/things/{{id}}
    upstream: api
    targets: ["GET /things/{{id}}"]
{thing}
  make_thing:
    stable: POST /v1/things
    upstream: api
    targets: ["POST /things"]
{make}
  module:
    stable: GET /v1/things/{{id}}/module
    upstream: api
    targets: ["GET /things/{{id}}.js"]
    response: {{raw: true}}
{module}
"""


def doc(expiry: str = "", probes: str = "", thing: str = "", make: str = "", module: str = "") -> str:
    return BASE.format(expiry=expiry, probes=probes, thing=thing, make=make, module=module)


def test_probe_shape_and_expiry_keys_parse_into_frozen_config() -> None:
    cfg = parse_config(
        doc(
            expiry="      expiry: {cookie: S, segment: 1, field: exp}",
            probes="probes: {interval: 45s, jitter: 5s, concurrency: 2, timeout: 3s}",
            thing="    probe: {params: {id: {from: things, field: id}}}\n"
            "    shape: {status: 200, content_type: application/json, fields: {id: string, meta.size: integer|null}}",
            module="    probe: {params: {id: abc}}\n    shape: {content_type: application/javascript}",
        ),
        "routes.yaml",
        {},
    )
    assert cfg.probes.interval == 45 and cfg.probes.jitter == 5 and cfg.probes.concurrency == 2
    auth = cfg.upstreams["api"].auth
    assert auth is not None and auth.expiry is not None
    assert (auth.expiry.credential, auth.expiry.segment, auth.expiry.field, auth.expiry.unit) == (
        "cookie:S",
        1,
        "exp",
        "s",
    )
    things, thing = cfg.routes[0], cfg.routes[1]
    assert things.probe is not None and dict(things.probe.query) == {"limit": "1"}  # one item checks a collection
    assert thing.probe is not None and thing.probe.depends_on == {"things"}
    assert thing.shape is not None and thing.shape.fields == (
        (("id",), frozenset({"string"})),
        (("meta", "size"), frozenset({"integer", "null"})),
    )


def test_probe_and_shape_mistakes_are_reported_with_lines() -> None:
    found = problems(
        doc(
            expiry="      expiry: {cookie: I, field: expiration, unit: us}",
            probes="probes: {interval: 10s, jitter: 10s}",
            thing="    probe: {params: {ident: 1}}\n    shape: {status: 2000, fields: {id: str}}",
            make="    probe: true",
            module="    probe: {params: {id: x}}\n"
            "    shape: {fields: {id: string}, content_type: 'text/html; charset=utf-8'}",
        )
    )
    text = "\n".join(found)
    assert "routes.yaml:6: upstreams.api.auth.expiry.cookie: no cookie named 'I' under auth.cookies" in text
    assert "upstreams.api.auth.expiry.unit: expected s (seconds since the epoch) or ms" in text
    assert "routes.yaml:7: probes: jitter (10s) must be shorter than the interval (10s)" in text
    assert "routes.thing.probe: the probe needs a sample value for path param 'id'" in text
    assert "routes.thing.probe.params.ident: 'ident' is neither a path param nor a query param" in text
    assert "routes.thing.shape.status: must be at most 599" in text
    assert "routes.thing.shape.fields.id: expected one of any, array, boolean" in text
    assert "routes.make_thing.probe: a probe sends a safe GET; this route answers POST" in text
    assert "routes.module.shape.fields: a raw response is passed through unparsed" in text
    assert "routes.module.shape.content_type: expected a media type such as application/json" in text
    assert all(p.split(":")[1].isdigit() and int(p.split(":")[1]) > 0 for p in found), found


def test_probe_samples_must_come_from_another_probed_route_without_cycles() -> None:
    text = "\n".join(problems(doc(thing="    probe: {params: {id: {from: thingz, field: id}}}")))
    assert "routes.thing.probe.params.id.from: no route named 'thingz' (did you mean 'things'?)" in text
    text = "\n".join(problems(doc(thing="    probe: {params: {id: {from: module, field: id}}}", module="")))
    assert "route 'module' has no probe to take a sample from" in text
    cyclic = doc(
        thing="    probe: {params: {id: {from: module, field: id}}}",
        module="    probe: {params: {id: {from: thing, field: id}}}",
    )
    text = "\n".join(problems(cyclic))
    assert "probe samples go round in a circle: thing → module → thing" in text


# --------------------------------------------------------------------------- a small fake upstream

FAKE_YAML = """\
upstreams:
  fake: {base_url: "${FAKE_URL}"}
probes: {concurrency: 2, timeout: 2s}
routes:
  doc:
    stable: GET /v1/docs/{id}
    upstream: fake
    targets: ["GET /docs/{id}"]
    probe: {params: {id: "1"}}
    shape:
      content_type: application/json
      fields: {id: string, version: integer, owner.login: string}
"""


class Fake:
    """An upstream whose answer the test changes, counting concurrent requests."""

    def __init__(self) -> None:
        self.body: Any = {"id": "1", "version": 3, "owner": {"login": "ana"}, "extra": True}
        self.content_type = "application/json"
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        import json

        return web.Response(text=json.dumps(self.body), content_type=self.content_type)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[Fake, str]]:
    state = Fake()
    app = web.Application()
    app.router.add_get("/docs/{id}", state.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield state, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_live_answers_are_checked_against_the_shape(make_gateway: Any, fake: tuple[Fake, str]) -> None:
    state, url = fake
    registry = CollectorRegistry()
    gw = await make_gateway(FAKE_YAML, env={"FAKE_URL": url}, registry=registry)
    resp = await gw.get("/v1/docs/1")
    assert resp.status == 200 and (await resp.json())["extra"] is True  # pass-through, shape holds
    cases = [
        ({"id": "1", "owner": {"login": "ana"}}, "application/json", "upstream response lost field 'version'"),
        ({"id": "1", "version": "3", "owner": {"login": "ana"}}, "application/json", "'version' is string"),
        ({"id": "1", "version": 3, "owner": {}}, "application/json", "lost field 'owner.login'"),
        (
            {"id": "1", "version": 3, "owner": {"login": "ana"}},
            "text/html",
            "answered text/html where application/json",
        ),
        ([{"id": 1}], "application/json", "'id' is integer, expected string"),
    ]
    for body, ctype, message in cases:
        state.body, state.content_type = body, ctype
        resp = await gw.get("/v1/docs/1")
        err = await resp.json()
        assert resp.status == 502, body
        assert err["error"]["code"] == "shape_drift" and err["error"]["route"] == "doc"
        assert message in err["error"]["message"], err
    errors = registry.get_sample_value(
        "gateway_upstream_errors_total", {"upstream": "fake", "route": "doc", "kind": "shape"}
    )
    assert errors == len(cases)
    assert registry.get_sample_value("gateway_route_up", {"route": "doc"}) == 0


async def test_shipped_shape_catches_a_dropped_field_on_a_pass_through_route(
    make_gateway: Any, sandboxes: Sandboxes
) -> None:
    """observable_notebook maps nothing, yet a document that lost its nodes is not handed to scripts."""
    gw = await make_gateway()
    nb = sandboxes.observable_state.by_kind("public")[0]
    assert (await gw.get(f"/v1/observable/notebooks/{nb.id}", headers=FRESH)).status == 200
    sandboxes.observable_state.apply_switches({"faults": {"/document/": {"drop_field": "nodes"}}})
    resp = await gw.get(f"/v1/observable/notebooks/{nb.id}", headers=FRESH)
    err = await resp.json()
    assert resp.status == 502
    assert err["error"] == {
        "code": "shape_drift",
        "message": "upstream response lost field 'nodes'",
        "route": "observable_notebook",
    }


# --------------------------------------------------------------------------- rounds against the sandboxes


def gateway_for(env: dict[str, str], path: Path = ROUTES) -> Gateway:
    return Gateway(load_config(path, env=env), env=env, registry=CollectorRegistry())


async def test_a_round_probes_every_route_with_samples_from_its_providers(
    sandboxes: Sandboxes, sandbox_env: dict[str, str]
) -> None:
    gw = gateway_for(sandbox_env)
    try:
        results = {r.route: r for r in await gw.prober.run_round()}
        probed = {r.name for r in gw.runtime.config.routes if r.probe is not None}
        assert set(results) == probed and len(probed) >= 8
        assert {r.outcome for r in results.values()} == {"ok"}, results
        obs = sandboxes.observable_state
        first = obs.by_kind("public")[0]  # newest public notebook: the list probe's first item
        assert obs.count("GET", f"/document/{first.id}") == 1
        assert obs.count("GET", f"/d/{first.id}.js") == 2  # module (followed) and version (reported)
        assert obs.count("GET", "/documents/@demo") == 1  # login taken from the document's owner
        project = sandboxes.posthog_state.visible(1)[0]
        assert sandboxes.posthog_state.count("GET", f"/api/projects/1/notebooks/{project.short_id}/") == 1
        for name in probed:
            assert gw.registry.get_sample_value("gateway_route_up", {"route": name}) == 1
            assert gw.registry.get_sample_value("gateway_probe_runs_total", {"route": name, "result": "ok"}) == 1

        # the document route breaks: it is down with the reason, and what needs its sample is skipped
        obs.apply_switches({"faults": {"/document/": {"status": 404}}})
        results = {r.route: r for r in await gw.prober.run_round()}
        broken = results["observable_notebook"]
        # its own sample (an entity the list just returned) is not found: the route is gone, not the entity
        assert broken.outcome == "broken" and broken.code == "upstream_route_gone"
        assert "answers 404 even for the probe's sample" in broken.message
        assert results["observable_user_notebooks"].outcome == "skipped"
        assert "whose probe is broken" in results["observable_user_notebooks"].message
        assert results["observable_notebooks"].outcome == "ok"
        assert gw.registry.get_sample_value("gateway_route_up", {"route": "observable_notebook"}) == 0
        info = {"route": "observable_notebook", "code": "upstream_route_gone"}
        assert gw.registry.get_sample_value("gateway_route_failure_info", info) == 1
        assert gw.health.get("observable_notebook").source == "probe"

        # --route probes only that route and the routes it takes samples from
        obs.reset()
        sandboxes.posthog_state.reset()
        results = {r.route: r for r in await gw.prober.run_round(["observable_notebook_version"])}
        assert set(results) == {"observable_notebook_version", "observable_notebooks"}
        assert gw.registry.get_sample_value("gateway_route_up", {"route": "observable_notebook"}) == 0  # untouched
        assert sandboxes.posthog_state.total_requests == 0
    finally:
        await gw.close()


async def test_a_probe_that_hangs_is_broken_after_the_timeout(make_gateway: Any, fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.delay = 5
    env = {"FAKE_URL": url}
    config = parse_config(FAKE_YAML.replace("timeout: 2s", "timeout: 200ms"), "fake.yaml", env)
    gw = Gateway(config, env=env, registry=CollectorRegistry())
    try:
        [result] = await gw.prober.run_round()
        assert result.outcome == "broken" and result.code == "probe_timeout"
        assert result.message == "no complete answer within 0.2s"
        assert result.duration < 4  # gave up at the timeout, not after the upstream's 5s
    finally:
        await gw.close()


async def test_at_most_concurrency_probes_run_at_once(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.delay = 0.05
    many = FAKE_YAML + "".join(
        f"  doc{i}:\n    stable: GET /v1/docs{i}/{{id}}\n    upstream: fake\n"
        f"    targets: ['GET /docs/{{id}}']\n    probe: {{params: {{id: '{i}'}}}}\n"
        for i in range(7)
    )
    env = {"FAKE_URL": url}
    gw = Gateway(parse_config(many, "many.yaml", env), env=env, registry=CollectorRegistry())
    try:
        results = await gw.prober.run_round()
        assert len(results) == 8 and all(r.outcome == "ok" for r in results)
        assert state.max_in_flight == 2  # probes.concurrency, and they do overlap
    finally:
        await gw.close()


async def test_background_rounds_wait_interval_plus_minus_jitter(
    sandboxes: Sandboxes, sandbox_env: dict[str, str]
) -> None:
    gw = gateway_for(sandbox_env)
    waits: list[float] = []
    rounds = 0

    async def record(seconds: float) -> None:
        nonlocal rounds
        waits.append(seconds)
        if len(waits) > 6:
            raise asyncio.CancelledError

    original = gw.prober.run_round

    async def counted(only: Any = None) -> Any:
        nonlocal rounds
        rounds += 1
        return await original(only)

    gw.prober._sleep = record  # type: ignore[method-assign]
    gw.prober.run_round = counted  # type: ignore[method-assign]
    try:
        with pytest.raises(asyncio.CancelledError):
            await gw.prober.run_forever()
        settings = gw.runtime.config.probes
        assert 0 <= waits[0] <= settings.jitter  # replicas started together spread out
        between = waits[1:]
        assert all(settings.interval - settings.jitter <= w <= settings.interval + settings.jitter for w in between)
        assert len(set(between)) > 1  # jittered, not in lock-step
        assert rounds == 6
        assert gw.registry.get_sample_value("gateway_probe_interval_seconds") == settings.interval
        last = gw.registry.get_sample_value("gateway_probe_last_round_timestamp_seconds")
        assert last is not None and last > 0
    finally:
        await gw.close()


async def test_serve_runs_probes_in_the_background_and_a_reload_reprobes_at_once(
    aiohttp_client: Any, sandboxes: Sandboxes, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    text = ROUTES.read_text().replace("interval: 30s", "interval: 60s").replace("jitter: 5s", "jitter: 0s")
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    registry = CollectorRegistry()
    client = await aiohttp_client(build_app(path, registry=registry, env=sandbox_env, probes=True))
    gateway = client.app[GATEWAY]

    async def until(check: Any, what: str) -> None:
        for _ in range(200):
            if check():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    await until(lambda: gateway.prober.last_round is not None, "the first round at start-up")
    assert registry.get_sample_value("gateway_route_up", {"route": "posthog_notebooks"}) == 1
    first_round = gateway.prober.last_round
    # the sandbox drops the list's title; a fixed routes.yaml (title optional) is reloaded: probed at once
    sandboxes.posthog_state.apply_switches({"faults": {"/api/projects/1/notebooks": {"drop_field": "title"}}})
    path.write_text(text.replace("fields: {short_id: string, title: string|null,", "fields: {short_id: string,"))
    gateway.reload()
    await until(lambda: gateway.prober.last_round != first_round, "a round right after the reload")
    assert registry.get_sample_value("gateway_route_up", {"route": "posthog_notebooks"}) == 0
    assert gateway.prober.results["posthog_notebooks"].message == (
        "upstream response lost field 'title' (stable field 'title')"
    )
    path.write_text(
        text.replace("fields: {short_id: string, title: string|null,", "fields: {short_id: string,").replace(
            "        title: title\n        created_at: created_at\n        updated_at: last_modified_at\n    probe:",
            "        title: {field: title, optional: true}\n        created_at: created_at\n"
            "        updated_at: last_modified_at\n    probe:",
        )
    )
    second = gateway.prober.last_round
    gateway.reload()
    await until(lambda: gateway.prober.last_round != second, "a round after the fix")
    assert registry.get_sample_value("gateway_route_up", {"route": "posthog_notebooks"}) == 1
    resp = await client.get("/v1/posthog/projects/1/notebooks?limit=2", headers=FRESH)
    assert resp.status == 200 and (await resp.json())["items"][0]["title"] is None


# --------------------------------------------------------------------------- gateway probe (cron / CI)


async def test_gateway_probe_exits_non_zero_listing_each_broken_route(
    sandboxes: Sandboxes, sandbox_env: dict[str, str]
) -> None:
    code, out, err = await run_cli("probe", str(ROUTES), env=sandbox_env)
    assert code == 0, out + err
    lines = out.splitlines()
    assert len(lines) == 8 and all(line.startswith("OK ") for line in lines), out

    sandboxes.observable_state.apply_switches({"faults": {"/user/documents": {"status": 404}}})
    sandboxes.posthog_state.apply_switches({"faults": {"/api/projects/1/notebooks": {"drop_field": "short_id"}}})
    code, out, err = await run_cli("probe", str(ROUTES), env=sandbox_env)
    assert code == 4, out + err
    broken = sorted(line.split()[1] for line in out.splitlines() if line.startswith("BROKEN"))
    assert broken == ["observable_notebooks", "posthog_notebooks"]
    assert (
        "BROKEN   observable_notebooks" in out and "upstream_route_gone: upstream 'observable' no longer serves" in out
    )
    assert "shape_drift: upstream response lost field 'short_id'" in out
    assert "SKIPPED  posthog_notebook " in out
    assert "2 of 8 route(s) broken: observable_notebooks, posthog_notebooks" in err
    assert sandbox_env["POSTHOG_API_KEY"] not in out + err

    code, out, err = await run_cli("probe", str(ROUTES), "--route", "posthog_notebook_activity", env=sandbox_env)
    assert code == 4 and "posthog_notebook_activity" in out and "observable" not in out
    code, out, err = await run_cli("probe", str(ROUTES), "--route", "posthog_notebook_create", env=sandbox_env)
    assert code == 2 and "no probe for route(s) posthog_notebook_create" in err
