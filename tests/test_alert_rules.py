"""deploy/prometheus and deploy/grafana: valid for promtool, alert rules unit-tested, and every
metric an alert or a dashboard panel reads is one the gateway really exports."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.server import GATEWAY
from sandbox.runner import Sandboxes
from tests.conftest import ROOT
from tests.helpers.prom import promtool

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "routegate.json"
_METRIC = re.compile(r"\b(gateway_[a-z_]+|up)\b(?!\s*\()")





def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return exprs


def as_promql(expr: str) -> str:
    """A Grafana expression with its variables filled in the way Grafana would."""
    return expr.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$instance", ".*")


async def test_prometheus_config_and_rules_pass_promtool() -> None:
    code, out = await promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert code == 0, out
    assert "SUCCESS: 12 rules found" in out


async def test_alert_rules_unit_tests_pass() -> None:
    code, out = await promtool("test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    assert code == 0, out
    assert "SUCCESS" in out
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts_test.yml").read_text()))
    assert tested == {r["alert"] for r in alert_rules()}, "every alert has a unit test"


def test_the_issue_asks_for_these_alerts() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert {
        "RoutegateRouteDown",
        "RoutegateUpstreamErrorRatioHigh",
        "RoutegateFallbackInUse",
        "RoutegateServingStaleCache",
        "RoutegateConfigReloadFailed",
        "RoutegateProbesNotRunning",
        "RoutegateCredentialExpiresSoon",
        "RoutegateCredentialExpiring",
        "RoutegateCredentialRejected",
        "RoutegateCredentialForbidden",
    } <= names
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


async def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:panel_{i}", "expr": as_promql(e)} for i, e in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    code, out = await promtool("check", "rules", str(path))
    assert code == 0, out


def test_dashboard_has_the_panels_an_operator_needs() -> None:
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["gridPos"]["x"] >= 0 and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert variables == {"datasource", "instance"}
    text = " ".join(p["title"].lower() for p in panels)
    for topic in ("route up/down", "error ratio", "latency", "cache", "fallback", "credential", "probe"):
        assert topic in text, topic
    used = " ".join(dashboard_exprs())
    for metric in (
        "gateway_route_up",
        "gateway_route_failure_info",
        "gateway_upstream_errors_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_cache_requests_total",
        "gateway_fallback_total",
        "gateway_upstream_credential_expiry_timestamp_seconds",
    ):
        assert metric in used, metric


async def test_alerts_and_panels_only_read_metrics_the_gateway_exports(make_gateway: Any, sandboxes: Sandboxes) -> None:
    gw = await make_gateway()
    text = await (await gw.get("/metrics")).text()
    exported = {"up"}
    for family in text_string_to_metric_families(text):
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "info": ("_info",),
        }.get(family.type, ("",))
        exported |= {family.name + s for s in suffixes}
    referenced: set[str] = set()
    for rule in alert_rules():
        referenced |= set(_METRIC.findall(rule["expr"]))
        for note in rule["annotations"].values():
            referenced |= set(_METRIC.findall(note))
    for expr in dashboard_exprs():
        referenced |= set(_METRIC.findall(expr))
    assert referenced - exported == set(), "alerts or panels read metrics nobody exports"
    assert len(referenced) > 15


async def test_the_start_time_the_new_child_alerts_read_is_when_the_gateway_started(make_gateway: Any) -> None:
    """The alerts tell a gateway that started within their window (all its counts are new) from one a
    fresh Prometheus never saw by this gauge: it must be the start, not the last reload."""
    before = time.time()
    gw = await make_gateway()
    after = time.time()

    async def started() -> float:
        text = await (await gw.get("/metrics")).text()
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
        values = [s.value for s in samples if s.name == "gateway_start_time_seconds"]
        assert len(values) == 1, values
        return values[0]

    first = await started()
    assert before - 1 <= first <= after + 1
    gw.app[GATEWAY].reload()  # what SIGHUP, the file watcher and POST /admin/reload do
    assert await started() == first
