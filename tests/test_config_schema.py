"""Config as a package on pydantic models: the JSON Schema editors read, the sections the models parse
(with the gateway's ``file:line: key`` problems), YAML conveniences, and a 3,000-route file."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.config import ConfigError, parse_config
from gateway.config.names import VALIDATOR_NAMES
from gateway.config.pagination_keys import STYLE_KEYS
from gateway.config.schema import fields_of
from gateway.config.spec_route import PaginationSpec
from tests.conftest import ROOT, ROUTES

SCHEMA = ROOT / "routes.schema.json"

BASE = """\
upstreams:
  api:
    base_url: http://127.0.0.1:9
routes:
  things:
    stable: GET /v1/things/{id}
    upstream: api
    targets: ["GET /things/{id}"]
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "routes.yaml", env or {})
    return [str(p) for p in info.value.problems]


def schema_errors(doc: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    return [".".join(map(str, e.absolute_path)) + ": " + e.message for e in validator.iter_errors(doc)]


def test_the_committed_schema_is_what_gateway_schema_prints() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "schema"], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True
    )
    assert out.stdout == SCHEMA.read_text(), "routes.schema.json is stale: run `gateway schema > routes.schema.json`"
    assert json.loads(out.stdout)["title"] == "routegate routes.yaml"
    first = ROUTES.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=./routes.schema.json"


def test_the_schema_accepts_the_shipped_file_and_flags_what_check_refuses() -> None:
    shipped = yaml.safe_load(ROUTES.read_text())
    assert schema_errors(shipped) == []
    doc = yaml.safe_load(BASE)
    doc["x-defaults"] = {"anything": [1, 2]}  # anchor blocks are free-form
    doc["upstreams"]["api"]["retries"] = {"attempts": "${RETRIES:-2}"}  # a ${VAR} may stand for a number
    assert schema_errors(doc) == []
    doc["upstreams"]["api"]["retries"] = {"attempts": 2, "backof": "1s"}
    doc["routes"]["things"]["validate"] = "no_such_validator"
    doc["routes"]["things"]["probe"] = None  # an absent key is left out, not written as null
    doc["defaults"] = {}
    got = "\n".join(schema_errors(doc))
    assert "upstreams.api.retries: Additional properties are not allowed ('backof' was unexpected)" in got
    assert "routes.things.validate: 'no_such_validator' is not one of" in got
    assert "routes.things.probe: None is not valid" in got
    assert ": 'defaults' does not match any of the regexes: '^x-'" in got


def test_every_field_has_a_description_for_editors() -> None:
    schema = json.loads(SCHEMA.read_text())
    missing = [
        f"{name}.{key}"
        for name, model in schema["$defs"].items()
        for key, prop in model.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert missing == []


def test_model_parsed_sections_report_file_line_and_key_in_the_gateways_words() -> None:
    text = (
        BASE.replace(
            "    base_url: http://127.0.0.1:9\n",
            "    base_url: http://127.0.0.1:9\n"
            "    timeouts: {conect: 1s, read: 5}\n"  # line 4
            "    retries: {attempts: 11, budget: 2}\n"  # line 5
            "    circuit_breaker: {failurs: 3}\n"  # line 6
            "    request_budget: {limits: []}\n",  # line 7
        )
        + "probes: {concurrency: true, interval: 0s}\n"
    )  # line 13
    got = problems(text)
    assert sorted(got) == [
        "routes.yaml:13: probes.concurrency: expected an integer, got a boolean (True)",
        "routes.yaml:13: probes.interval: the interval must be longer than 0s",
        "routes.yaml:4: upstreams.api.timeouts.conect: unknown key 'conect' (did you mean 'connect'?);"
        " allowed: connect, read, total",
        "routes.yaml:4: upstreams.api.timeouts.read: 5 has no unit: write 5s for seconds (or ms, m, h, d)",
        "routes.yaml:5: upstreams.api.retries.attempts: must be at most 10, got 11",
        "routes.yaml:5: upstreams.api.retries.budget: 2 must be between 0% and 100%",
        # the misspelt required key is one problem, not also a missing one
        "routes.yaml:6: upstreams.api.circuit_breaker.failurs: unknown key 'failurs' (did you mean 'failures'?);"
        " allowed: cooldown, failures",
        "routes.yaml:7: upstreams.api.request_budget.limits: expected a list of budgets such as [480/1m, 4800/1h]",
    ]
    got = problems(BASE.replace("routes:\n", "    circuit_breaker: {cooldown: 5s}\nroutes:\n"))
    assert got == ["routes.yaml:4: upstreams.api.circuit_breaker: missing required key 'failures'"]
    assert problems(BASE + "probes: [1]\n") == ["routes.yaml:9: probes: expected a mapping, got a list"]


def test_a_secret_interpolated_into_a_model_parsed_section_is_never_echoed() -> None:
    got = problems(BASE + "probes: {concurrency: '${TOKEN}'}\n", env={"TOKEN": "hunter2-secret"})
    assert got == ["routes.yaml:9: probes.concurrency: expected an integer, got a string"]


def test_model_parsed_sections_build_the_frozen_config() -> None:
    text = (
        BASE.replace(
            "    base_url: http://127.0.0.1:9\n",
            "    base_url: http://127.0.0.1:9\n"
            "    timeouts: {connect: 1s}\n"
            "    retries: {attempts: 3, budget: 50%}\n"
            "    circuit_breaker: {failures: 4}\n"
            "    request_budget: {limits: [10/1s, 100/1m]}\n",
        )
        + "server: {client_timeouts: {body: 1m}}\nprobes: {interval: 2m}\n"
    )
    cfg = parse_config(text, "routes.yaml", {})
    up = cfg.upstreams["api"]
    assert (up.timeouts.connect, up.timeouts.read) == (1.0, 30.0)
    assert (up.retries.attempts, up.retries.budget, up.retries.backoff) == (3, 0.5, 0.1)
    assert (up.breaker.failures, up.breaker.cooldown) == (4, 30.0)
    assert up.budget.limits == ((10, 1.0), (100, 60.0))
    assert (cfg.server.header_timeout, cfg.server.body_timeout) == (15.0, 60.0)
    assert (cfg.probes.interval, cfg.probes.jitter) == (120.0, 10.0)


def test_config_imports_no_runtime_code() -> None:
    code = "import sys, gateway.config; print(' '.join(sorted(m for m in sys.modules if m.startswith('gateway'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = out.stdout.split()
    assert "gateway.config.model" in loaded
    # besides itself, only the two leaf modules of shared constants (they import nothing of the gateway)
    shared = {"gateway", "gateway.methods", "gateway.digest"}
    assert [m for m in loaded if m not in shared and not m.startswith("gateway.config")] == []


def test_the_names_config_checks_are_the_ones_runtime_implements() -> None:
    from gateway.validators import VALIDATORS

    assert set(VALIDATORS) == VALIDATOR_NAMES
    got = problems(BASE + "    validate: observable_new_doc\n")
    assert got == [
        "routes.yaml:9: routes.things.validate: unknown validator 'observable_new_doc'; known: "
        + ", ".join(sorted(VALIDATOR_NAMES))
    ]
    assert fields_of(PaginationSpec) == set().union(*STYLE_KEYS.values())


def test_three_thousand_routes_load_and_a_mistake_among_them_keeps_its_line() -> None:
    lines = ["x-route: &route", "  upstream: api", "upstreams:", "  api: {base_url: 'http://127.0.0.1:9'}", "routes:"]
    for i in range(3000):
        lines += [
            f"  r{i}:",
            "    <<: *route",
            f"    stable: GET /v1/r{i}/{{id}}",
            f"    targets: ['GET /things/{i}/{{id}}']",
            "    params: {kind: {enum: [a, b], default: a}}",
            "    cache: {ttl: 5s}",
        ]
    text = "\n".join(lines) + "\n"
    cfg = parse_config(text, "routes.yaml", {})
    assert len(cfg.routes) == 3000
    assert cfg.routes[-1].upstream == "api" and cfg.routes[-1].path.raw == "/v1/r2999/{id}"
    bad = text.replace("    stable: GET /v1/r2999/{id}", "    stable: GET /v1/r2998/{id}")
    line = 5 + 2999 * 6 + 1  # the route's own line
    assert problems(bad) == [
        f"routes.yaml:{line}: routes.r2999.stable: GET /v1/r2998/{{id}} shadows route 'r2998'"
        f" (GET /v1/r2998/{{id}}, line {line - 6}); one of them must change"
    ]


def test_the_server_section_is_model_parsed_and_its_secret_still_by_hand() -> None:
    text = BASE + (
        "server: {max_concurency: 3, allowed_hosts: x, max_connections: 0, cursor_key: hunter2, max_body_bytes: 5x}\n"
    )
    got = problems(text)
    assert sorted(got) == [
        "routes.yaml:9: server.allowed_hosts: expected a list of host names"
        " (a leading '*.' matches subdomains; '*' any host)",
        "routes.yaml:9: server.cursor_key: expected {env: VAR}, {file: PATH} or {file_env: VAR};"
        " secrets are never written in routes.yaml",
        "routes.yaml:9: server.max_body_bytes: '5x' is not a size such as 1MiB or 64kb",
        "routes.yaml:9: server.max_concurency: unknown key 'max_concurency' (did you mean 'max_concurrency'?);"
        " allowed: allowed_hosts, client_timeouts, cursor_key, max_body_bytes, max_buffered_bytes,"
        " max_concurrency, max_connections, max_connections_per_ip",
        "routes.yaml:9: server.max_connections: must be at least 1, got 0",
    ]
    assert all("hunter2" not in p for p in got)
    cfg = parse_config(
        BASE + "server: {max_body_bytes: 2MiB, allowed_hosts: [A.example., '*'], cursor_key: {env: K}}\n",
        "routes.yaml",
        {"K": "k"},
    )
    assert (cfg.server.max_body_bytes, cfg.server.allowed_hosts) == (2 << 20, ("a.example", "*"))
    assert cfg.server.cursor_key is not None and cfg.server.max_buffered_bytes == 64 << 20


def test_the_cache_section_is_model_parsed_with_its_on_off_switch() -> None:
    assert not parse_config(BASE + "cache: {enabled: '${C:-off}'}\n", "routes.yaml", {}).cache.enabled
    cfg = parse_config(BASE + "cache: {enabled: on, max_bytes: 1MiB, max_entry_bytes: 2MiB}\n", "routes.yaml", {})
    assert (cfg.cache.enabled, cfg.cache.max_bytes, cfg.cache.max_entry_bytes) == (True, 1 << 20, 1 << 20)
    got = problems(BASE + "cache: {enabled: maybe, backend: disk, max_bytes: 0}\n")
    assert sorted(got) == [
        "routes.yaml:9: cache.backend: expected 'memory' (this process), 'redis' (shared by every replica)"
        " or 'auto' (redis when its URL is set)",
        "routes.yaml:9: cache.enabled: expected on or off, got 'maybe'",
        "routes.yaml:9: cache.max_bytes: must be at least 1 byte",
    ]
    # the redis block stays hand-parsed: it holds a secret, and its checks span keys
    got = problems(BASE + "cache: {backend: redis, redis: {url: redis://u:hunter2@h}}\n")
    assert got == [
        "routes.yaml:9: cache.redis.url: expected {env: VAR}, {file: PATH} or {file_env: VAR};"
        " secrets are never written in routes.yaml"
    ]
