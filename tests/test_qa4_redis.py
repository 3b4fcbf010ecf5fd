"""QA round 4, shared state: after a Redis blip the local share binds for one window from when
sharing resumed (not from a replica's next call, which may come hours later), and the budget still
holds across processes right after one; and the alert on shared-state failures
(``RoutegateSharedStateFailing``), run by promtool on what a real gateway exports after a blip.
Real redis-server on 127.0.0.1 (``redis_server``) and gateway instances sharing it."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.server import GATEWAY
from tests.conftest import ROOT
from tests.fake_upstream import start_fake
from tests.helpers.prom import ALERTS, promtool_test
from tests.helpers.redis import RedisServer

YAML = """
cache:
  enabled: off
  backend: redis
  redis: {{url: {{env: ROUTEGATE_REDIS_URL}}, prefix: rgqa4, timeout: 200ms, retry_after: 200ms}}
upstreams:
  fake:
    base_url: {url}
    timeouts: {{connect: 1s, read: 2s, total: 5s}}
    retries: {{attempts: 1, max_wait: 500ms}}
    request_budget: {{limits: [8/2s], max_wait: 500ms}}
    auth: {{bearer: {{env: FAKE_KEY}}}}
routes:
  get_thing:
    stable: GET /v1/things/{{name}}
    upstream: fake
    targets: ["GET /things/{{name}}"]
"""
BUDGET, PER = 8, 2.0
DASHBOARD = ROOT / "deploy" / "grafana" / "routegate.json"
ALERT = "RoutegateSharedStateFailing"
GW = {"instance": "gw:8080", "job": "routegate"}


async def _two(make_gateway: Any, url: str, redis: RedisServer) -> list[TestClient[Any, Any]]:
    """Two gateway instances sharing one Redis, each counting the other live."""
    env = {"FAKE_KEY": "fake-key", "ROUTEGATE_REDIS_URL": redis.url}
    gws = [await make_gateway(YAML.format(url=url), env=env, registry=CollectorRegistry()) for _ in range(2)]
    await _sharing(gws)
    return gws


async def _sharing(gws: list[TestClient[Any, Any]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not all(gw.app[GATEWAY].shared.active and gw.app[GATEWAY].shared.instances == 2 for gw in gws):
        assert time.monotonic() < deadline, "shared state never came up with both instances"
        await asyncio.sleep(0.05)


async def _blip(redis: RedisServer, gws: list[TestClient[Any, Any]], seconds: float) -> None:
    """Redis stops answering for ``seconds``: every instance falls back, then shares again."""
    epochs = [gw.app[GATEWAY].shared.epoch for gw in gws]
    redis.pause()
    try:
        deadline = time.monotonic() + 5
        while any(gw.app[GATEWAY].shared.active for gw in gws):
            assert time.monotonic() < deadline, "an instance never noticed Redis going away"
            await asyncio.sleep(0.02)
        await asyncio.sleep(seconds)
    finally:
        redis.resume()
    await _sharing(gws)
    assert all(gw.app[GATEWAY].shared.epoch == e + 2 for gw, e in zip(gws, epochs, strict=True))


async def _burst(gw: TestClient[Any, Any], tag: str, n: int) -> list[tuple[int, dict[str, Any]]]:
    answers = await asyncio.gather(*(gw.get(f"/v1/things/{tag}{i}") for i in range(n)))
    return [(r.status, await r.json()) for r in answers]


def _most_in_a_window(times: list[float], span: float) -> int:
    """The most sends any ``span``-long stretch saw."""
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u - t < span) for i, t in enumerate(times)), default=0)


async def test_a_replica_idle_through_a_blip_gets_the_whole_budget_once_a_window_has_passed_since_redis_came_back(
    aiohttp_server: Any, make_gateway: Any, redis_server: RedisServer
) -> None:
    fake, _server, url = await start_fake(aiohttp_server)
    one, two = await _two(make_gateway, url, redis_server)
    assert (await one.get("/v1/things/before")).status == 200  # the credential is in use before the blip
    await _blip(redis_server, [one, two], 0.5)
    resumed = one.app[GATEWAY].shared.resumed
    # nothing is sent for longer than a window (plus the hand-over's max_wait and slack) after Redis came back
    await asyncio.sleep(max(0.0, resumed + PER + 1.0 + 0.5 - time.monotonic()) + 0.3)
    sent = fake.count()
    answers = await _burst(one, "after", BUDGET)
    # the shared window is empty: the whole budget is answered, not this instance's half of it
    assert [s for s, _ in answers] == [200] * BUDGET, answers
    assert fake.count() == sent + BUDGET


async def test_within_the_window_after_a_blip_the_refusal_says_since_when_redis_answers_again(
    aiohttp_server: Any, make_gateway: Any, redis_server: RedisServer
) -> None:
    _fake, _server, url = await start_fake(aiohttp_server)
    one, two = await _two(make_gateway, url, redis_server)
    assert (await one.get("/v1/things/before")).status == 200
    await _blip(redis_server, [one, two], 0.5)
    await asyncio.sleep(1.0)
    answers = await _burst(one, "soon", BUDGET)
    refused = [body for status, body in answers if status == 503]
    assert refused, answers  # the local share still binds: the other instance may not have written its sends
    ago = round(time.monotonic() - one.app[GATEWAY].shared.resumed)
    for body in refused:
        assert body["error"]["code"] == "upstream_budget_exhausted", body
        message = body["error"]["message"]
        assert "shared through Redis, which was unreachable until " in message, message
        said = int(message.split("unreachable until ", 1)[1].split("s ago", 1)[0])
        assert 1 <= said <= max(1, ago) + 1, (said, ago)


async def test_a_replica_idle_through_an_outage_keeps_to_its_share_while_the_other_ones_local_sends_are_unwritten(
    aiohttp_server: Any, make_gateway: Any, redis_server: RedisServer
) -> None:
    """The grace is not about a replica's own sends: the other one sent its share locally during the
    outage and has not written it yet, so the idle one may not take the whole shared window at once."""
    fake, _server, url = await start_fake(aiohttp_server)
    one, two = await _two(make_gateway, url, redis_server)
    assert (await one.get("/v1/things/before")).status == 200
    epochs = [gw.app[GATEWAY].shared.epoch for gw in (one, two)]
    redis_server.pause()
    try:
        deadline = time.monotonic() + 5
        while two.app[GATEWAY].shared.active or one.app[GATEWAY].shared.active:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        # the outage outlasts the hand-over (a window plus max_wait): the other instance sends its share locally
        deadline = time.monotonic() + 6
        local: list[int] = []
        while len(local) < BUDGET // 2:
            assert time.monotonic() < deadline, local
            local += [s for s, _ in await _burst(two, f"local{len(fake.hits)}-", 1) if s == 200]
            await asyncio.sleep(0.1)
    finally:
        redis_server.resume()
    await _sharing([one, two])
    assert [gw.app[GATEWAY].shared.epoch for gw in (one, two)] == [e + 2 for e in epochs]
    answers = await _burst(one, "idle", BUDGET)  # at once, before the other instance calls again
    assert sorted(s for s, _ in answers) == [200] * (BUDGET // 2) + [503] * (BUDGET // 2), answers
    assert _most_in_a_window(fake.times(), PER * 0.85) <= BUDGET


async def test_right_after_a_blip_with_calls_in_flight_no_window_sees_more_than_the_budget(
    aiohttp_server: Any, make_gateway: Any, redis_server: RedisServer
) -> None:
    fake, _server, url = await start_fake(aiohttp_server)
    one, two = await _two(make_gateway, url, redis_server)
    assert len(await _burst(two, "warm", 3)) == 3  # the other instance holds slots of the shared window
    # calls on both instances are waiting for Redis when it stops answering
    flight = asyncio.gather(_burst(one, "flight-a", 4), _burst(two, "flight-b", 4))
    await asyncio.sleep(0.01)
    await _blip(redis_server, [one, two], 0.5)
    await flight
    # right after: both instances are hit with bursts again and again, for more than two windows
    ends = time.monotonic() + 2 * PER + 1.5
    round_ = 0
    while time.monotonic() < ends:
        await asyncio.gather(_burst(one, f"a{round_}-", 6), _burst(two, f"b{round_}-", 6))
        round_ += 1
        await asyncio.sleep(0.1)
    # 0.85 of the window: the arrival of a send at the upstream lags its slot by a little
    assert _most_in_a_window(fake.times(), PER * 0.85) <= BUDGET
    assert fake.count() > BUDGET  # and the budget was used again once the window had passed


async def test_a_credential_first_called_while_redis_is_away_is_not_sent_into_a_window_another_instance_filled(
    aiohttp_server: Any, make_gateway: Any, redis_server: RedisServer
) -> None:
    """A new send log hands over like the others: this instance never called the credential, the
    other one filled the shared window a moment before Redis went away."""
    fake, _server, url = await start_fake(aiohttp_server)
    one, two = await _two(make_gateway, url, redis_server)
    assert [s for s, _ in await _burst(two, "full", BUDGET)] == [200] * BUDGET
    redis_server.pause()
    try:
        deadline = time.monotonic() + 5
        while one.app[GATEWAY].shared.active:
            assert time.monotonic() < deadline, "the instance never noticed Redis going away"
            await asyncio.sleep(0.02)
        answers = await _burst(one, "new", BUDGET // 2)
        assert [s for s, _ in answers] == [503] * (BUDGET // 2), answers
        assert {body["error"]["code"] for _, body in answers} == {"upstream_budget_exhausted"}
        assert fake.count() == BUDGET  # its share of the window counts as used: nothing more was sent
    finally:
        redis_server.resume()


# --------------------------------------------------------------------------- the alert on shared-state failures


def _rule() -> dict[str, Any]:
    doc = yaml.safe_load(ALERTS.read_text())
    [rule] = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == ALERT]
    return rule





def _failures(text: str) -> dict[str, float]:
    """gateway_shared_state_failures_total of a /metrics text, by reason (no child: not there)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_shared_state_failures_total":
                assert set(sample.labels) == {"reason"}, sample.labels
                out[sample.labels["reason"]] = sample.value
    return out


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in {**GW, **labels}.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _history(minutes: int) -> list[dict[str, str]]:
    """A gateway running for an hour, scraped all along."""
    return [
        _series("gateway_start_time_seconds", f"-3600x{minutes}"),
        _series("up", f"1x{minutes}"),
    ]


def _fired(reason: str) -> dict[str, Any]:
    """The alert for ``reason``, its annotations rendered as Prometheus would."""
    labels = {**GW, "reason": reason}
    notes = {
        k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], v)
        for k, v in _rule()["annotations"].items()
    }
    return {"exp_labels": {"severity": "warning", **labels}, "exp_annotations": notes}


async def test_the_shared_state_alert_fires_on_what_a_real_gateway_exports_after_a_blip_and_not_without_one(
    aiohttp_server: Any, make_gateway: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    _fake, _server, url = await start_fake(aiohttp_server)
    one, two = await _two(make_gateway, url, redis_server)
    healthy = _failures(await (await two.get("/metrics")).text())
    # no failure yet: every reason exported at 0 from the start (a first failure is then an increase a
    # dashboard's increase() shows), nothing to fire on
    assert healthy == {"timeout": 0.0, "connection": 0.0, "error": 0.0, "busy": 0.0}
    await _blip(redis_server, [one], 0.5)  # only `one` is looked at; both fall back
    first = _failures(await (await one.get("/metrics")).text())
    assert first.get("timeout", 0) >= 1, first  # a paused Redis times out
    await _blip(redis_server, [one], 0.5)
    second = _failures(await (await one.get("/metrics")).text())
    assert second["timeout"] > first["timeout"], (first, second)
    # the names and labels the alert reads are what /metrics exports (instance and job come from the scrape)
    expr = _rule()["expr"]
    assert set(re.findall(r"\bgateway_[a-z_]+", expr)) == {
        "gateway_shared_state_failures_total",
        "gateway_start_time_seconds",
    }
    grouped = {label.strip() for by in re.findall(r"by \(([^)]*)\)", expr) for label in by.split(",")}
    assert grouped == {"instance", "job", "reason"}

    reasons = sorted(second)
    grew = [r for r in reasons if second[r] > first.get(r, 0)]
    minutes = 30
    blank = " ".join(["_"] * 12)
    tests = [
        {  # the child appears above zero (as exported) on a gateway Prometheus has scraped for 12 minutes
            "interval": "1m",
            "input_series": _history(minutes)
            + [
                _series("gateway_shared_state_failures_total", f"{blank} {first[r]:g}x18", reason=r)
                for r in sorted(first)
                if first[r]
            ],
            "alert_rule_test": [
                {"eval_time": "11m", "alertname": ALERT, "exp_alerts": []},
                {"eval_time": "13m", "alertname": ALERT, "exp_alerts": [_fired(r) for r in sorted(first) if first[r]]},
                {"eval_time": "23m", "alertname": ALERT, "exp_alerts": []},
            ],
        },
        {  # the counter grows from the first scrape's value to the second's: an increase
            "interval": "1m",
            "input_series": _history(minutes)
            + [
                _series("gateway_shared_state_failures_total", f"{first.get(r, 0):g}x4 {second[r]:g}x25", reason=r)
                for r in reasons
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": ALERT, "exp_alerts": []},
                {
                    "eval_time": "6m",
                    "alertname": ALERT,
                    "exp_alerts": [_fired(r) for r in grew],
                },
                {"eval_time": "17m", "alertname": ALERT, "exp_alerts": []},
            ],
        },
        {  # what the healthy instance exported: no failure child, only its start time and up
            "interval": "1m",
            "input_series": _history(minutes),
            "alert_rule_test": [{"eval_time": f"{m}m", "alertname": ALERT, "exp_alerts": []} for m in (1, 11, 25)],
        },
    ]
    code, out = await promtool_test(tmp_path, tests)
    assert code == 0, out


def test_the_shared_state_alert_links_a_runbook_section_that_exists_and_the_dashboard_shows_the_failures() -> None:
    rule = _rule()
    assert rule["labels"]["severity"] == "warning"
    assert "for" not in rule  # a blip is over in seconds: any failure fires
    page, anchor = rule["annotations"]["runbook"].split("#")
    headings = re.findall(r"^#+ (.+)$", (ROOT / page).read_text(), flags=re.M)
    slugs = {re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", h).strip().lower()) for h in headings}
    assert anchor in slugs, (anchor, slugs)
    assert f"#{anchor}" in (ROOT / "docs" / "observability.md").read_text()  # the alert table links it too
    observability = (ROOT / "docs" / "observability.md").read_text()
    assert f"| `{ALERT}` | warning |" in observability
    scale_out = (ROOT / "docs" / "scale-out.md").read_text()
    assert ALERT in scale_out and "Alert on `gateway_shared_state_up == 0`" not in scale_out
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert any("gateway_shared_state_failures_total" in e and "reason" in e for e in exprs)
    assert any("gateway_shared_state_up" in e for e in exprs)
