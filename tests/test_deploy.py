"""deploy/ checked without a container engine or a cluster: every YAML file parses, the
Dockerfile passes hadolint and builds a slim non-root runtime from a context that holds what it
copies (and no secrets), `docker compose config` accepts the stack, promtool accepts the
Prometheus files, and the Kubernetes base validates against the Kubernetes JSON schemas. The
shipped Redis is also run for real (its exact command line, on 127.0.0.1): it refuses a client
without the password, and under memory pressure it evicts cache entries, never the
invalidation markers or the write sequence."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import redis
import redis.asyncio as aioredis
import setuptools
import yaml
from prometheus_client import CollectorRegistry

from gateway.cache.policy import CacheKey
from gateway.cache.redis_store import RedisBackend
from gateway.cache.store import Entry
from gateway.config import load_config, parse_config
from sandbox.runner import Sandboxes
from tests.conftest import need_binary
from tests.helpers.deploy import (
    DEPLOY,
    K8S,
    K8S_VERSIONS,
    RENDERED,
    ROOT,
    _compose_tree,
    by_kind,
    compose_command,
    filled_env,
    kustomize_by_hand,
    load_all,
    pod_secret_env,
    run,
    run_redis_url_init,
    secret_keys_used,
    tool,
)
from tests.processes import free_port

_spec = importlib.util.spec_from_file_location("render_routes", DEPLOY / "render_routes.py")
assert _spec is not None and _spec.loader is not None
render_routes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_routes)


# --------------------------------------------------------------------------- YAML and routes


def test_every_yaml_file_under_deploy_is_well_formed() -> None:
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))
    assert {p.relative_to(DEPLOY).as_posix() for p in files} >= {
        "docker-compose.yml",
        "routes.production.yaml",
        "k8s/kustomization.yaml",
        "k8s/deployment.yaml",
        "k8s/config/routes.yaml",
    }
    for path in files:
        docs = load_all(path)
        assert docs and all(isinstance(d, dict) for d in docs), path


def test_the_deployed_routes_file_is_rendered_from_routes_yaml_and_valid() -> None:
    expected = render_routes.render()
    assert RENDERED.read_text() == expected, "deploy/k8s/config/routes.yaml is stale: run `make deploy-config`"
    deployed = load_config(RENDERED, env={})
    mine = load_config(ROOT / "routes.yaml", env={})
    # the same stable API, the same upstream targets

    def api(cfg: Any) -> list[Any]:
        return [(r.name, r.stable, [(t.method, t.path.raw, t.query, t.body) for t in r.targets]) for r in cfg.routes]

    assert api(deployed) == api(mine)
    assert deployed.cache.backend == "redis"
    assert deployed.cache.redis_url is not None
    assert [s.name for s in deployed.cache.redis_url.sources] == ["ROUTEGATE_REDIS_URL", "ROUTEGATE_REDIS_URL_FILE"]
    assert {k.name for k in deployed.access.clients} == {"backup-job", "scripts"}
    assert {k.name for k in deployed.access.admins} == {"ops"}
    backup = next(k for k in deployed.access.clients if k.name == "backup-job")
    assert backup.methods == frozenset({"GET", "HEAD"})


def test_rendering_replaces_a_section_routes_yaml_already_has() -> None:
    source = (
        "version: 1\ncache:\n  backend: memory\n# inside the dropped block\n  max_bytes: 1MiB\n"
        "# routes follow\nroutes:\n  a: 1\n"
    )
    out = render_routes.render(source, "cache:\n  backend: redis\n")
    docs = yaml.safe_load(out)
    assert docs == {"version": 1, "routes": {"a": 1}, "cache": {"backend": "redis"}}
    assert "# routes follow" in out and "inside the dropped" not in out and out.startswith("# GENERATED")


def _env_names(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "env" and isinstance(v, str):
                yield v
            else:
                yield from _env_names(v)
    elif isinstance(value, list):
        for v in value:
            yield from _env_names(v)
    elif isinstance(value, str):
        yield from re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", value)


def test_env_example_and_compose_pass_every_variable_routes_yaml_reads() -> None:
    names = set(_env_names(yaml.safe_load(RENDERED.read_text())))
    assert {"OBSERVABLE_SESSION", "POSTHOG_API_KEY", "ROUTEGATE_REDIS_URL", "ROUTEGATE_ADMIN_KEY"} <= names
    example = (DEPLOY / ".env.example").read_text()
    for line in example.splitlines():
        if line and not line.startswith("#"):
            assert re.match(r"^[A-Z_][A-Z0-9_]*=[^#]*$", line), f"kubectl would keep the comment: {line!r}"
    listed = set(re.findall(r"^#? ?([A-Z_][A-Z0-9_]*)=", example, re.MULTILINE))
    assert names <= listed, f"missing from deploy/.env.example: {sorted(names - listed)}"
    compose = load_all(DEPLOY / "docker-compose.yml")[0]
    passed = set(compose["services"]["gateway"]["environment"])
    assert names <= passed, f"docker-compose.yml does not pass {sorted(names - passed)} to the gateway"
    assert "GRAFANA_ADMIN_PASSWORD" not in passed
    # and what compose interpolates and the manifests take from the routegate-secrets Secret
    interpolated = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (DEPLOY / "docker-compose.yml").read_text()))
    secret_keys = {key for doc in kustomize_by_hand() for key in secret_keys_used(doc)}
    assert "ROUTEGATE_REDIS_PASSWORD" in secret_keys & interpolated
    wanted = interpolated | secret_keys
    assert wanted <= listed, f"missing from deploy/.env.example: {sorted(wanted - listed)}"


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_passes_hadolint() -> None:
    result = run(tool("hadolint"), "--failure-threshold", "info", str(DEPLOY / "Dockerfile"))
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_is_a_slim_non_root_runtime_with_a_healthcheck() -> None:
    ins = dockerfile_instructions()
    args = dict(a.split("=", 1) for w, a in ins if w == "ARG" and "=" in a)
    froms = [a for w, a in ins if w == "FROM"]
    assert len(froms) == 2, "a build stage and a runtime stage"
    base = froms[-1].replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", ""))
    assert re.match(r"^python:3\.11(\.\d+)?-slim", base), base
    runtime = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM") :]
    users = [a for w, a in runtime if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime must not run as root"
    assert "10001" in users[-1]  # the uid the Kubernetes securityContext pins
    health = [a for w, a in runtime if w == "HEALTHCHECK"]
    assert health and "/healthz" in health[0] and "--interval" in health[0]
    assert ("EXPOSE", "8080") in runtime
    text = (DEPLOY / "Dockerfile").read_text()
    assert "[redis,fast]" in text and "[dev]" not in text and "pytest" not in text, "runtime extras only"
    # the runtime stage installs only the wheels the build stage made, without reaching an index
    installs = [a for w, a in runtime if w == "RUN" and "pip install" in a]
    assert installs and all("--no-index" in a for a in installs)
    env = " ".join(a for w, a in runtime if w == "ENV")
    assert "ROUTEGATE_CONFIG=/etc/routegate/routes.yaml" in env
    copies = [a.split() for w, a in runtime if w == "COPY"]
    assert ["deploy/k8s/config/routes.yaml", "/etc/routegate/routes.yaml"] in copies
    entry = next(a for w, a in runtime if w == "ENTRYPOINT")
    cmd = json.loads(next(a for w, a in runtime if w == "CMD"))
    assert json.loads(entry) == ["gateway"] and cmd[:3] == ["serve", "--host", "0.0.0.0"]


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rx = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pattern[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pattern[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(rx + "$")))
    return rules


def in_build_context(rel: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories wins."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negate, rx in _dockerignore_rules():
        if any(rx.match(c) for c in candidates):
            included = negate
    return included


def test_build_context_has_what_the_dockerfile_copies_and_no_secrets(tmp_path: Path) -> None:
    ins = dockerfile_instructions()
    sources = [s for w, a in ins if w == "COPY" and "--from" not in a for s in a.split()[:-1]]
    assert sources
    for src in sources:
        path = ROOT / src
        assert path.exists(), src
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
        for f in files:
            assert in_build_context(f.relative_to(ROOT).as_posix()), f"{f} is excluded by .dockerignore"
    for secret in ["deploy/.env", ".env", "x/prod.env", ".venv/bin/python", ".git/config", "tests/test_backup.py"]:
        assert not in_build_context(secret), secret
    for needed in ["pyproject.toml", "README.md", "gateway/server.py", "deploy/k8s/config/routes.yaml"]:
        assert in_build_context(needed), needed
    assert not in_build_context("deploy/k8s/deployment.yaml")


def test_the_image_is_built_without_the_sandbox(tmp_path: Path) -> None:
    """The distribution has two packages; the wheel the image installs must hold only the gateway."""
    assert (ROOT / "sandbox" / "runner.py").exists()
    assert not in_build_context("sandbox/runner.py"), ".dockerignore must keep sandbox/ out of the context"
    ins = dockerfile_instructions()
    build = ins[: max(i for i, (w, _) in enumerate(ins) if w == "FROM")]
    sources = [s for w, a in build if w == "COPY" and "--from" not in a for s in a.split()[:-1]]
    # what the build stage holds when it runs `pip wheel`: what it copies, as the context has it
    for src in sources:
        for f in [ROOT / src] if (ROOT / src).is_file() else (ROOT / src).rglob("*"):
            rel = f.relative_to(ROOT).as_posix()
            if f.is_file() and in_build_context(rel):
                (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, tmp_path / rel)
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = setuptools.find_packages(str(tmp_path), include=include["include"])
    assert "gateway" in packages and "gateway.cache" in packages
    assert not [p for p in packages if p.split(".")[0] == "sandbox"], packages
    # while a checkout's own install (make install, the demo) has both
    assert "sandbox" in setuptools.find_packages(str(ROOT), include=include["include"])


# --------------------------------------------------------------------------- docker compose


def test_compose_config_accepts_the_stack(tmp_path: Path) -> None:
    deploy = _compose_tree(tmp_path, filled_env())
    result = run(*compose_command(), "-f", str(deploy / "docker-compose.yml"), "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    cfg = json.loads(result.stdout)
    services = cfg["services"]
    assert set(services) == {"gateway", "redis", "prometheus", "grafana"}
    gw = services["gateway"]
    assert gw["build"]["dockerfile"] == "deploy/Dockerfile" and Path(gw["build"]["context"]) == tmp_path
    assert gw["environment"]["ROUTEGATE_CLIENT_KEY"] == "client-key"
    assert gw["environment"]["ROUTEGATE_REDIS_URL"] == "redis://:redis-pw@redis:6379/0"
    assert "ROUTEGATE_REDIS_PASSWORD" not in gw["environment"]
    assert "GRAFANA_ADMIN_PASSWORD" not in gw["environment"]
    assert all(p["host_ip"] == "127.0.0.1" for s in services.values() for p in s.get("ports", []))
    mount = next(v for v in gw["volumes"] if v["target"] == "/etc/routegate")
    assert Path(mount["source"]) == deploy / "k8s" / "config" and mount["read_only"]
    assert gw["depends_on"]["redis"]["condition"] == "service_healthy"
    assert gw["read_only"] and gw["cap_drop"] == ["ALL"]
    # Redis wants the password from deploy/.env, keeps invalidation markers, and its healthcheck logs in
    red = services["redis"]
    assert _flag(red["command"], "--requirepass") == "redis-pw" and red["environment"]["REDISCLI_AUTH"] == "redis-pw"
    assert _flag(red["command"], "--maxmemory-policy") == "volatile-ttl"
    assert red["healthcheck"]["test"] == ["CMD-SHELL", "redis-cli ping | grep -q PONG"]
    assert "ports" not in red
    # Prometheus scrapes the gateway service under the job name the alert rules select, with the rules
    prom = services["prometheus"]
    rules = next(v for v in prom["volumes"] if v["target"] == "/etc/prometheus/alerts.yml")
    assert Path(rules["source"]) == deploy / "prometheus" / "alerts.yml"
    prom_cfg = yaml.safe_load(cfg["configs"]["prometheus_config"]["content"])
    job = prom_cfg["scrape_configs"][0]
    assert job["job_name"] == "routegate" and job["static_configs"][0]["targets"] == ["gateway:8080"]
    assert prom_cfg["rule_files"] == ["/etc/prometheus/alerts.yml"]
    # Grafana: the Prometheus datasource and the dashboard folder are provisioned
    graf = services["grafana"]
    assert graf["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "grafana-pw"
    dashboards = next(v for v in graf["volumes"] if v["target"] == "/var/lib/grafana/dashboards")
    assert Path(dashboards["source"]) == deploy / "grafana"
    datasource = yaml.safe_load(cfg["configs"]["grafana_datasource"]["content"])
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load(cfg["configs"]["grafana_dashboards"]["content"])
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (deploy / "grafana" / Path(home).name).is_file()


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_compose_refuses_to_start_without_the_required_secrets(tmp_path: Path) -> None:
    deploy = _compose_tree(tmp_path, (DEPLOY / ".env.example").read_text())
    result = run(*compose_command(), "-f", str(deploy / "docker-compose.yml"), "config", "--quiet")
    assert result.returncode != 0
    assert "ROUTEGATE_CLIENT_KEY" in result.stderr or "GRAFANA_ADMIN_PASSWORD" in result.stderr
    # every other secret filled in, an empty Redis password is refused too (it would switch auth off)
    (deploy / ".env").write_text(filled_env(ROUTEGATE_REDIS_PASSWORD=""))
    result = run(*compose_command(), "-f", str(deploy / "docker-compose.yml"), "config", "--quiet")
    assert result.returncode != 0 and "ROUTEGATE_REDIS_PASSWORD" in result.stderr


def test_compose_gives_the_gateway_the_redis_password_when_no_url_is_set(tmp_path: Path) -> None:
    deploy = _compose_tree(tmp_path, filled_env(ROUTEGATE_REDIS_URL=None, ROUTEGATE_REDIS_PASSWORD="pw-only"))
    result = run(*compose_command(), "-f", str(deploy / "docker-compose.yml"), "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    env = json.loads(result.stdout)["services"]["gateway"]["environment"]
    assert env["ROUTEGATE_REDIS_URL"] == "redis://:pw-only@redis:6379/0"


# --------------------------------------------------------------------------- Prometheus


def test_promtool_accepts_the_compose_prometheus_config_and_rules(tmp_path: Path) -> None:
    promtool = tool("promtool")
    compose = load_all(DEPLOY / "docker-compose.yml")[0]
    content = compose["configs"]["prometheus_config"]["content"]
    alerts = DEPLOY / "prometheus" / "alerts.yml"
    assert alerts.is_file(), "compose mounts deploy/prometheus/alerts.yml"
    shutil.copy(alerts, tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(content.replace("/etc/prometheus/alerts.yml", "alerts.yml"))
    result = run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.parametrize("name", ["prometheus.yml", "alerts.yml"])
def test_promtool_accepts_the_shipped_prometheus_files(name: str) -> None:
    path = DEPLOY / "prometheus" / name
    if not path.exists():
        pytest.skip(f"deploy/prometheus/{name} is not shipped (yet)")
    verb = "config" if name == "prometheus.yml" else "rules"
    result = run(tool("promtool"), "check", verb, str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_kubernetes_prometheus_config(tmp_path: Path) -> None:
    """Debian's promtool is built without Kubernetes discovery, so where it cannot read that block, it checks
    the rest (rules, relabelling, every other key) with the discovery swapped for a static target; the
    discovery block's own keys are the next test's."""
    source = DEPLOY / "prometheus" / "prometheus.kubernetes.yml"
    result = run(tool("promtool"), "check", "config", str(source))
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        cfg = yaml.safe_load(source.read_text())
        for job in cfg["scrape_configs"]:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["static_configs"] = [{"targets": ["127.0.0.1:8080"]}]
        shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        result = run(tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def _relabelled(relabel: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus's keep/drop/replace relabelling of one target (enough of it for these configs)."""
    labels = dict(labels)
    for rule in relabel:
        value = rule.get("separator", ";").join(labels.get(n, "") for n in rule.get("source_labels", []))
        matched = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep" and not matched:
            return None
        if action == "drop" and matched:
            return None
        if action == "replace" and matched:
            labels[rule["target_label"]] = matched.expand(rule.get("replacement", "$1").replace("$1", "\\1"))
    return labels


def test_the_kubernetes_prometheus_job_scrapes_each_gateway_pod_as_job_routegate() -> None:
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.kubernetes.yml").read_text())
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "routegate"]
    assert "static_configs" not in job, "a Service address spreads scrapes over the replicas"
    assert [sd["role"] for sd in job["kubernetes_sd_configs"]] == ["pod"]
    deployment = next(d for d in load_all(DEPLOY / "k8s" / "deployment.yaml") if d and d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "gateway"]
    (port,) = container["ports"]

    def target(pod_labels: dict[str, str], port_name: str, phase: str = "Running") -> dict[str, str] | None:
        meta = {f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v for k, v in pod_labels.items()}
        meta |= {
            "__meta_kubernetes_pod_container_port_name": port_name,
            "__meta_kubernetes_pod_phase": phase,
            "__meta_kubernetes_namespace": "routegate",
            "__meta_kubernetes_pod_name": "routegate-abc",
        }
        return _relabelled(job["relabel_configs"], meta)

    kept = target(pod["metadata"]["labels"], port["name"])
    assert kept is not None and kept["pod"] == "routegate-abc" and kept["namespace"] == "routegate"
    assert target(pod["metadata"]["labels"], "metrics-other") is None
    assert target(pod["metadata"]["labels"], port["name"], phase="Pending") is None
    assert target({"app.kubernetes.io/name": "redis"}, port["name"]) is None


def test_every_scrape_job_the_alerts_select_exists_in_each_prometheus_config() -> None:
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    selected = set(re.findall(r'job\s*=~?\s*"([^"]+)"', rules))
    assert selected == {"routegate"}, selected
    compose = load_all(DEPLOY / "docker-compose.yml")[0]
    configs = {
        "prometheus.yml": yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text()),
        "prometheus.kubernetes.yml": yaml.safe_load((DEPLOY / "prometheus" / "prometheus.kubernetes.yml").read_text()),
        "docker-compose.yml": yaml.safe_load(compose["configs"]["prometheus_config"]["content"]),
    }
    for name, cfg in configs.items():
        jobs = {j["job_name"] for j in cfg["scrape_configs"]}
        assert selected <= jobs, f"{name}: the alerts select job(s) {sorted(selected - jobs)} it does not scrape"


# --------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    docs = kustomize_by_hand()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "Deployment",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "Service",
        ]
    )
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")


def test_schema_validation_catches_a_misspelt_field() -> None:
    """The check above can fail: a probe with a typo is refused in strict mode."""
    dep = copy.deepcopy(by_kind(kustomize_by_hand(), "Deployment", "routegate"))
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSIONS[0], strict=True)


def test_k8s_base_runs_stateless_replicas_wired_together() -> None:
    docs = kustomize_by_hand()
    dep = by_kind(docs, "Deployment", "routegate")
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert dep["spec"]["replicas"] >= 2
    spec = pod["spec"]
    (c,) = spec["containers"]
    assert c["args"][:3] == ["serve", "--host", "0.0.0.0"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # secrets come from a Secret the operator creates, never from the manifests (as files:
    # tests/test_deploy_hardening.py); settings that are not secrets from a ConfigMap
    assert c["envFrom"] == [{"configMapRef": {"name": "routegate-settings"}}]
    assert by_kind(docs, "ConfigMap", "routegate-settings")["data"]["POSTHOG_PROJECT_ID"] == "1"
    assert not any(d["kind"] == "Secret" for d in docs)
    env = {e["name"]: e.get("value") for e in c["env"]}
    # routes.yaml comes from the ConfigMap, mounted as a directory so updates reach the file
    mount = next(m for m in c["volumeMounts"] if m["name"] == "routes")
    assert "subPath" not in mount and mount["readOnly"]
    volume = next(v for v in spec["volumes"] if v["name"] == "routes")
    configmap = by_kind(docs, "ConfigMap", volume["configMap"]["name"])
    (key,) = configmap["data"]
    assert env["ROUTEGATE_CONFIG"] == f"{mount['mountPath']}/{key}"
    cfg = parse_config(configmap["data"][key], "configmap", env={})
    assert cfg.cache.backend == "redis" and cfg.access.clients, "shared cache, and keys since it listens on 0.0.0.0"
    # hardened, and the same uid as the image
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] == 10001
    assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    notes = pod["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/port"] == "8080"
    assert notes["prometheus.io/path"] == "/metrics"
    svc = by_kind(docs, "Service", "routegate")
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    hpa = by_kind(docs, "HorizontalPodAutoscaler", "routegate")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "routegate"}
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    pdb = by_kind(docs, "PodDisruptionBudget", "routegate")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain must be able to proceed"
    # Redis: the Service the URL the redis-url init container builds names
    (init,) = spec["initContainers"]
    redis_url = re.search(r"redis://:\" \+ .* \+ \"@([^:/@]+):(\d+)/0", init["args"][0])
    assert redis_url is not None
    redis_svc = by_kind(docs, "Service", redis_url.group(1))
    assert redis_svc["spec"]["ports"][0]["port"] == int(redis_url.group(2))
    redis_pods = by_kind(docs, "Deployment", "redis")["spec"]["template"]["metadata"]["labels"]
    assert redis_svc["spec"]["selector"].items() <= redis_pods.items()


def redis_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = by_kind(docs, "Deployment", "redis")["spec"]["template"]["spec"]["containers"]
    container: dict[str, Any] = c
    return container


def test_k8s_redis_wants_the_secret_password_and_admits_only_gateway_pods() -> None:
    docs = kustomize_by_hand()
    c = redis_container(docs)
    # the password is a file from the Secret's one key, never an environment variable
    env = {e["name"]: e for e in c["env"]}
    assert all("valueFrom" not in e for e in env.values())
    pod = by_kind(docs, "Deployment", "redis")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"]["items"] == [{"key": "ROUTEGATE_REDIS_PASSWORD", "path": "ROUTEGATE_REDIS_PASSWORD"}]
    assert not volume["secret"].get("optional")
    mount = next(m for m in c["volumeMounts"] if m["name"] == volume["name"])
    assert env["REDIS_PASSWORD_FILE"]["value"] == f"{mount['mountPath']}/ROUTEGATE_REDIS_PASSWORD"
    assert c["command"] == ["sh", "-c"]
    (script,) = c["args"]
    assert '--requirepass "$pw"' in script and "--maxmemory-policy volatile-ttl" in script
    probe = c["readinessProbe"]["exec"]["command"]
    assert probe[:2] == ["sh", "-c"] and "redis-cli ping | grep -q PONG" in probe[2]
    assert '"$REDIS_PASSWORD_FILE"' in probe[2]
    # the NetworkPolicy: Redis pods take connections from gateway pods, on the Redis port, and nothing else
    policy = by_kind(docs, "NetworkPolicy", "redis")["spec"]
    redis_pods = by_kind(docs, "Deployment", "redis")["spec"]["template"]["metadata"]["labels"]
    gateway_pods = by_kind(docs, "Deployment", "routegate")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= redis_pods.items()
    assert policy["policyTypes"] == ["Ingress", "Egress"] and not policy.get("egress"), "Redis connects nowhere"
    (rule,) = policy["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}, "same namespace, pods only: no namespaceSelector or ipBlock"
    assert peer["podSelector"]["matchLabels"].items() <= gateway_pods.items()
    assert not peer["podSelector"]["matchLabels"].items() <= redis_pods.items()
    assert rule["ports"] == [{"protocol": "TCP", "port": c["ports"][0]["containerPort"]}]


def test_schema_validation_catches_a_malformed_network_policy() -> None:
    policy = copy.deepcopy(by_kind(kustomize_by_hand(), "NetworkPolicy", "redis"))
    policy["spec"]["ingress"][0]["from"][0]["podSelectors"] = policy["spec"]["ingress"][0]["from"][0].pop("podSelector")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(policy, K8S_VERSIONS[0], strict=True)


# --------------------------------------------------------------------------- the shipped Redis, run


class ShippedRedis:
    """deploy/k8s/redis.yaml's container command, run as is with a local redis-server, plus
    loopback-only flags (and any overrides) appended the way its ``"$@"`` allows."""

    def __init__(self, workdir: Path, password: str, *extra: str) -> None:
        need_binary("redis-server")
        c = redis_container(kustomize_by_hand())
        self.port = free_port()
        self.password = password
        # the Secret's key as the pod mounts it: a file named by REDIS_PASSWORD_FILE
        secret = workdir / "redis-password"
        secret.write_text(password)
        env = {"PATH": os.environ["PATH"], "REDIS_PASSWORD_FILE": str(secret)}
        args = [*c["command"], *c["args"], "redis", "--port", str(self.port), "--bind", "127.0.0.1", *extra]
        self.proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        client = redis.Redis(port=self.port, password=self.password, socket_timeout=1)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def url(self, workdir: Path) -> str:
        """The URL the gateway pod's redis-url init container builds from the password, pointed here."""
        built = run_redis_url_init(workdir, ROUTEGATE_REDIS_PASSWORD=self.password)
        assert built.returncode == 0, built.stderr
        return built.url.replace("@redis:6379/", f"@127.0.0.1:{self.port}/")

    def info(self, section: str) -> dict[str, Any]:
        client = redis.Redis(port=self.port, password=self.password)
        try:
            got: dict[str, Any] = client.info(section)
            return got
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def shipped_redis(tmp_path: Path) -> Iterator[ShippedRedis]:
    server = ShippedRedis(tmp_path, secrets.token_urlsafe(24))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_shipped_redis_refuses_to_start_with_an_empty_password(tmp_path: Path) -> None:
    server = ShippedRedis(tmp_path, "")
    try:
        assert server.proc.wait(timeout=10) == 1
        assert server.proc.stdout is not None
        assert b"ROUTEGATE_REDIS_PASSWORD" in server.proc.stdout.read()
    finally:
        server.stop()


async def test_gateway_caches_in_the_shipped_redis_only_with_its_password(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes, shipped_redis: ShippedRedis, tmp_path: Path
) -> None:
    """The gateway configured as its Kubernetes pod is: the rendered routes file, every secret a
    file named by a NAME_FILE variable, the Redis URL the init container writes from the password
    alone, and the Redis as redis.yaml runs it."""
    client_key = secrets.token_urlsafe(24)
    init = run_redis_url_init(tmp_path, ROUTEGATE_REDIS_PASSWORD=shipped_redis.password, ROUTEGATE_REDIS_URL="")
    assert init.returncode == 0, init.stderr
    url_file = tmp_path / "redis-url-here"
    url_file.write_text(shipped_redis.url(tmp_path))
    files = pod_secret_env(tmp_path, {**sandbox_env, "ROUTEGATE_CLIENT_KEY": client_key}, url_file)
    settings = {k: sandbox_env[k] for k in ("OBSERVABLE_API_URL", "POSTHOG_URL")}  # routegate-settings' job
    env = {**settings, **files}
    assert not any(k in env for k in ("ROUTEGATE_CLIENT_KEY", "POSTHOG_API_KEY", "ROUTEGATE_REDIS_URL"))
    gw = await make_gateway(RENDERED.read_text(), env=env)
    headers = {"X-API-Key": client_key}
    notebooks = "/v1/posthog/projects/1/notebooks"
    first = sandboxes.posthog_state.visible(1)[0].short_id
    for url in (f"{notebooks}?limit=3", f"{notebooks}/{first}"):
        resp = await gw.get(url, headers=headers)
        assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
        resp = await gw.get(url, headers=headers)
        assert resp.status == 200 and resp.headers["X-Cache"] == "HIT"
    resp = await gw.patch(f"{notebooks}/{first}", json={"title": "Edited"}, headers=headers)
    assert resp.status == 200
    # what volatile-ttl relies on: the sequence never expires, every marker outlives every entry
    store = aioredis.Redis.from_url(url_file.read_text())
    try:
        keys = [k.decode() async for k in store.scan_iter(match="routegate:*")]
        ttl = {k: await store.pttl(k) for k in keys}
    finally:
        await store.aclose()
    entries = [v for k, v in ttl.items() if k.startswith("routegate:e:")]
    markers = [v for k, v in ttl.items() if k.startswith("routegate:m:")]
    assert entries and markers and ttl["routegate:seq"] == -1
    assert min(markers) > max(entries) > 0
    # a gateway that does not know the password is refused: it still answers, from the upstream
    registry = CollectorRegistry()
    blind = await make_gateway(
        RENDERED.read_text(),
        env={**env, "ROUTEGATE_REDIS_URL": f"redis://127.0.0.1:{shipped_redis.port}/0"},
        registry=registry,
    )
    for _ in range(2):
        resp = await blind.get(f"{notebooks}?limit=3", headers=headers)
        assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
    errors = registry.get_sample_value("gateway_cache_backend_errors_total", {"backend": "redis", "op": "lookup"})
    assert errors is not None and errors >= 1


async def test_shipped_redis_under_memory_pressure_evicts_entries_not_markers_or_the_sequence(
    tmp_path: Path,
) -> None:
    # the shipped command line with a small maxmemory instead of 200mb, so filling it takes a moment
    server = ShippedRedis(tmp_path, secrets.token_urlsafe(24), "--maxmemory", "4mb")
    backend: RedisBackend | None = None
    try:
        server.wait_ready()
        errors: list[str] = []
        backend = RedisBackend(server.url(tmp_path), "routegate", 2.0, 1.0, errors.append)
        # markers as the cache writes them: kept for the longest entry lifetime plus a margin
        lifetime = 5 * 60 + 3600.0
        await backend.invalidate(["t:/v1/x/1", "s:/v1/x", "r:other"], keep_for=lifetime + 60)
        body = secrets.token_bytes(8192)
        for i in range(1500):
            entry = Entry(200, (("content-type", "application/octet-stream"),), body, 0.0, 1.0, 2.0, 1)
            await backend.store(CacheKey("x", f"/v1/x/{i}", "d"), entry, lifetime - (i % 7) * 30)
        assert not errors, errors
        assert server.info("stats")["evicted_keys"] > 0, "the test must push Redis past maxmemory"
        store = aioredis.Redis.from_url(server.url(tmp_path))
        try:
            assert await store.get("routegate:seq") == b"1"
            marks = await store.mget(["routegate:m:t:/v1/x/1", "routegate:m:s:/v1/x", "routegate:m:r:other"])
            assert marks == [b"1", b"1", b"1"]
        finally:
            await store.aclose()
    finally:
        if backend is not None:
            await backend.close()
        server.stop()


def test_kubectl_kustomize_builds_the_same_base() -> None:
    result = run(tool("kubectl"), "kustomize", str(K8S))
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    mine = kustomize_by_hand()

    def key(d: dict[str, Any]) -> tuple[str, str]:
        return (d["kind"], d["metadata"]["name"])

    assert sorted(map(key, built)) == sorted(map(key, mine))
    for doc in built:
        ours = next(d for d in mine if key(d) == key(doc))
        assert doc["metadata"]["labels"] == ours["metadata"]["labels"]
        assert doc.get("spec") == ours.get("spec") and doc.get("data") == ours.get("data")


def test_every_variable_the_deployed_routes_read_is_in_the_deploy_docs_table() -> None:
    """ROUTEGATE_PUBLIC_HOST was in .env.example and nowhere in the docs: on Kubernetes the Secret never
    feeds it, so an operator following docs/deploying.md got a 421 on every request through the ingress."""
    names = {n for n in _env_names(yaml.safe_load(RENDERED.read_text())) if not n.endswith("_FILE")}
    table = (ROOT / "docs" / "deploying.md").read_text().split("## The secrets, and where each one goes")[1]
    documented = set(re.findall(r"`([A-Z_][A-Z0-9_]*)`", table.split("\n## ")[0]))
    assert "ROUTEGATE_PUBLIC_HOST" in names
    assert names <= documented, f"not in docs/deploying.md's table: {sorted(names - documented)}"
