"""Deploy hardening (issue 14.11 and issue 16's deploy points), checked offline like
tests/test_deploy.py: the gateway pods' NetworkPolicy, their secrets mounted as files and only
the ones they use, Redis pinned by digest, a deploy/.env.example that works when filled in as its
comments say, and an overlay that names an image a cluster can pull. Where a manifest carries a
script (the redis-url init container), the script is run, and the gateway is driven through real
HTTP configured exactly as its pod is."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from sandbox.runner import Sandboxes
from tests.conftest import ROOT, need_binary
from tests.helpers.deploy import (
    DEPLOY,
    K8S_VERSIONS,
    RENDERED,
    by_kind,
    kustomize_by_hand,
    pod_secret_env,
    run,
    run_redis_url_init,
    secret_keys_used,
    tool,
)

OVERLAY = DEPLOY / "overlays" / "registry"
#: what the gateway reads from the routegate-secrets Secret, and nothing else
GATEWAY_SECRETS = {
    "OBSERVABLE_SESSION",
    "OBSERVABLE_TOKEN",
    "POSTHOG_API_KEY",
    "ROUTEGATE_CLIENT_KEY",
    "ROUTEGATE_BACKUP_KEY",
    "ROUTEGATE_ADMIN_KEY",
}
DIGEST = re.compile(r"^[a-z0-9./_-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}$")


def gateway_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = by_kind(docs, "Deployment", "routegate")["spec"]["template"]
    return spec


# --------------------------------------------------------------------------- NetworkPolicy


def test_gateway_pods_have_a_network_policy_in_from_the_namespace_and_ingress_out_to_dns_redis_443() -> None:
    docs = kustomize_by_hand()
    pod = gateway_pod(docs)
    labels = pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    selecting = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    ]
    assert len(selecting) == 1, "exactly one NetworkPolicy selects the gateway pods"
    policy = selecting[0]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"], "both directions are default-deny for these pods"

    # in: on the http port only, from this namespace's pods or the ingress controller's namespace
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": container["ports"][0]["containerPort"]}]
    peers = rule["from"]
    assert {"podSelector": {}} in peers
    others = [p for p in peers if p != {"podSelector": {}}]
    assert others and all(set(p) == {"namespaceSelector"} for p in others)
    assert all(set(p["namespaceSelector"]["matchLabels"]) == {"kubernetes.io/metadata.name"} for p in others)
    assert not any("ipBlock" in p for p in peers), "no caller from outside the cluster bypasses the ingress"

    # out: DNS, Redis, 443; nothing else
    dns, cache, web = policy["egress"]
    (dns_peer,) = dns["to"]
    assert dns_peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert dns_peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert sorted((p["protocol"], p["port"]) for p in dns["ports"]) == [("TCP", 53), ("UDP", 53)]
    (cache_peer,) = cache["to"]
    redis_pods = by_kind(docs, "Deployment", "redis")["spec"]["template"]
    (redis_c,) = redis_pods["spec"]["containers"]
    assert set(cache_peer) == {"podSelector"}
    assert cache_peer["podSelector"]["matchLabels"].items() <= redis_pods["metadata"]["labels"].items()
    assert not cache_peer["podSelector"]["matchLabels"].items() <= labels.items()
    assert cache["ports"] == [{"protocol": "TCP", "port": redis_c["ports"][0]["containerPort"]}]
    assert web["ports"] == [{"protocol": "TCP", "port": 443}]
    assert all(set(p) == {"ipBlock"} for p in web["to"])
    blocks = [p["ipBlock"] for p in web["to"]]
    assert {b["cidr"] for b in blocks} == {"0.0.0.0/0", "::/0"}
    excepted = [ipaddress.ip_network(c) for b in blocks for c in b.get("except", [])]

    def refused(address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == n.version and ip in n for n in excepted)

    # the cloud metadata service, the cluster and private networks, loopback: not reachable on 443
    for address in ("169.254.169.254", "10.96.0.1", "172.20.0.5", "192.168.1.1", "100.64.0.1", "127.0.0.1"):
        assert refused(address), address
    for address in ("fd00::1", "fe80::1", "::1"):
        assert refused(address), address
    # the upstreams are public addresses: reachable
    for address in ("104.18.0.1", "2606:4700::1"):
        assert not refused(address), address


def test_schema_validation_catches_a_malformed_gateway_network_policy() -> None:
    """The schema check of tests/test_deploy.py covers this policy: a misspelt field is refused."""
    policy = by_kind(kustomize_by_hand(), "NetworkPolicy", "routegate")
    kubernetes_validate.validate(policy, K8S_VERSIONS[0], strict=True)
    policy["spec"]["egress"][2]["to"][0]["ipBlock"]["excepts"] = policy["spec"]["egress"][2]["to"][0]["ipBlock"].pop(
        "except"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(policy, K8S_VERSIONS[0], strict=True)


# --------------------------------------------------------------------------- secrets as files


def test_gateway_pods_mount_only_the_secrets_they_use_as_files() -> None:
    docs = kustomize_by_hand()
    spec = gateway_pod(docs)["spec"]
    (gw,) = spec["containers"]
    (init,) = spec["initContainers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for c in (gw, init):
        # never the whole Secret as environment, never a secret as an environment variable
        assert all("secretRef" not in e for e in c.get("envFrom", [])), c["name"]
        assert all("valueFrom" not in e for e in c.get("env", [])), c["name"]

    def keys(container: dict[str, Any]) -> set[str]:
        return {k for m in container["volumeMounts"] for k in secret_keys_used(volumes[m["name"]])}

    assert keys(gw) == GATEWAY_SECRETS
    # Redis's password reaches only the init container, which turns it into the URL
    assert keys(init) == {"ROUTEGATE_REDIS_PASSWORD", "ROUTEGATE_REDIS_URL"}
    assert all(m.get("readOnly") for m in gw["volumeMounts"] if m["name"] in ("secrets", "redis-url"))
    for v in volumes.values():
        if "secret" in v:
            assert v["secret"]["defaultMode"] == 0o440, "owner and the pod's fsGroup only"
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
    assert volumes["redis-url"]["emptyDir"]["medium"] == "Memory", "the URL carries the password: never on disk"
    # nothing else in the Secret is anywhere in the gateway pod; Grafana's password is nowhere in Kubernetes
    everything = {k for d in docs for k in secret_keys_used(d)}
    assert "GRAFANA_ADMIN_PASSWORD" not in everything
    # every NAME_FILE variable names a file the container has
    mounts = {m["mountPath"] for m in gw["volumeMounts"]}
    env = {e["name"]: e["value"] for e in gw["env"]}
    files = {n: v for n, v in env.items() if n.endswith("_FILE")}
    for name, path in files.items():
        assert str(Path(path).parent) in mounts, name
    assert {Path(p).name for n, p in files.items() if n != "ROUTEGATE_REDIS_URL_FILE"} == GATEWAY_SECRETS


def test_every_secret_the_deployed_routes_read_has_a_file_the_pod_provides() -> None:
    """routes.yaml and deploy/routes.production.yaml offer NAME_FILE for each secret the pod mounts."""
    from gateway.config import load_config

    cfg = load_config(RENDERED, env={})
    read: dict[str, set[str]] = {}
    for up in cfg.upstreams.values():
        auth = up.auth
        if auth is None:
            continue
        for secret in [auth.bearer, *(s for _, s in auth.cookies), *(s for _, s in auth.headers)]:
            if secret is not None:
                read.setdefault(secret.sources[0].name, {s.name for s in secret.sources})
    for key in (*cfg.access.clients, *cfg.access.admins):
        read[key.secret.sources[0].name] = {s.name for s in key.secret.sources}
    assert cfg.cache.redis_url is not None
    read["ROUTEGATE_REDIS_URL"] = {s.name for s in cfg.cache.redis_url.sources}
    assert set(read) == GATEWAY_SECRETS | {"ROUTEGATE_REDIS_URL"}
    gw = gateway_pod(kustomize_by_hand())["spec"]["containers"][0]
    set_in_pod = {e["name"] for e in gw["env"]}
    for name, sources in read.items():
        assert f"{name}_FILE" in sources, f"routes: {name} has no file alternative"
        assert f"{name}_FILE" in set_in_pod and name not in set_in_pod, name


async def test_gateway_configured_as_its_pod_serves_with_secrets_from_files_only(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes, tmp_path: Path
) -> None:
    """Client key, upstream cookies and PostHog key all come from files: the requests reach both
    upstreams authenticated, and a wrong key is refused."""
    client_key = secrets.token_urlsafe(24)
    values = {**sandbox_env, "ROUTEGATE_CLIENT_KEY": client_key}
    url_file = tmp_path / "no-redis-url"
    url_file.write_text("")
    env = {
        "OBSERVABLE_API_URL": sandbox_env["OBSERVABLE_API_URL"],
        "POSTHOG_URL": sandbox_env["POSTHOG_URL"],
        "ROUTEGATE_CACHE": "off",
        **pod_secret_env(tmp_path, values, url_file),
    }
    assert not set(env) & GATEWAY_SECRETS
    gw = await make_gateway(RENDERED.read_text(), env=env)
    headers = {"X-API-Key": client_key}
    resp = await gw.get("/v1/posthog/projects/1/notebooks?limit=2", headers=headers)
    assert resp.status == 200, await resp.text()
    assert len((await resp.json())["items"]) == 2
    resp = await gw.get("/v1/observable/notebooks?limit=2", headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["items"]
    resp = await gw.get("/v1/posthog/projects/1/notebooks", headers={"X-API-Key": "not-the-key"})
    assert resp.status == 401
    # a renewed cookie is a changed file: the next request uses it, without a restart
    (tmp_path / "OBSERVABLE_SESSION").write_text("expired-or-forged")
    resp = await gw.get("/v1/observable/notebooks?limit=1", headers=headers)
    assert resp.status >= 400, "the gateway reread the session file"


# --------------------------------------------------------------------------- the Redis URL


def test_filling_in_only_the_redis_password_gives_kubernetes_a_working_url(tmp_path: Path) -> None:
    password = "p@ss/w:rd#?%+ x"  # everything a URL would misread, percent-encoded by the init container
    done = run_redis_url_init(tmp_path, ROUTEGATE_REDIS_PASSWORD=password, ROUTEGATE_REDIS_URL="")
    assert done.returncode == 0, done.stderr
    import redis

    client = redis.Redis.from_url(done.url)  # what the gateway's redis client makes of it (no connection yet)
    kwargs = client.connection_pool.connection_kwargs
    client.close()
    assert kwargs["password"] == password and kwargs["host"] == "redis" and kwargs["port"] == 6379
    assert done.mode == 0o400


def test_a_managed_redis_url_is_used_as_given(tmp_path: Path) -> None:
    url = "rediss://:secret@my-redis.example.com:6380/0"
    done = run_redis_url_init(tmp_path, ROUTEGATE_REDIS_PASSWORD="", ROUTEGATE_REDIS_URL=url)
    assert done.returncode == 0 and done.url == url


@pytest.mark.parametrize("given", [{}, {"ROUTEGATE_REDIS_PASSWORD": "", "ROUTEGATE_REDIS_URL": ""}])
def test_without_a_redis_password_or_url_the_pod_does_not_start(tmp_path: Path, given: dict[str, str]) -> None:
    """An unset cache is a failed pod naming what to set, not a gateway silently without its cache."""
    done = run_redis_url_init(tmp_path, **given)
    assert done.returncode != 0 and done.url == ""
    assert "ROUTEGATE_REDIS_PASSWORD" in done.stderr and "routegate-secrets" in done.stderr


def test_env_example_is_usable_as_its_comments_say() -> None:
    text = (DEPLOY / ".env.example").read_text()
    values = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    # no placeholder an operator must notice and rewrite: every value is empty or a working default
    assert {k: v for k, v in values.items() if v} == {"POSTHOG_PROJECT_ID": "1"}
    assert values["ROUTEGATE_REDIS_URL"] == "" and "ROUTEGATE_REDIS_PASSWORD" in values
    assert "PASSWORD@" not in text


def test_compose_builds_the_url_from_the_password_alone(tmp_path: Path) -> None:
    """deploy/.env.example with only the secrets filled in (the URL left empty, as it ships)."""
    from tests.helpers.deploy import _compose_tree, compose_command, filled_env

    deploy = _compose_tree(tmp_path, filled_env(ROUTEGATE_REDIS_PASSWORD="only-this"))
    done = run(*compose_command(), "-f", str(deploy / "docker-compose.yml"), "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    env = yaml.safe_load(done.stdout)["services"]["gateway"]["environment"]
    assert env["ROUTEGATE_REDIS_URL"] == "redis://:only-this@redis:6379/0"


# --------------------------------------------------------------------------- images


def test_redis_image_is_pinned_by_digest_the_same_in_kubernetes_and_compose() -> None:
    (c,) = by_kind(kustomize_by_hand(), "Deployment", "redis")["spec"]["template"]["spec"]["containers"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert DIGEST.match(c["image"]), c["image"]
    assert compose["services"]["redis"]["image"] == c["image"]
    assert c["image"].startswith("redis:7.2."), "the BSD-licensed 7.2 line"
    text = (DEPLOY / "k8s" / "redis.yaml").read_text()
    assert "imagetools inspect" in text, "where the digest came from and how to renew it is said"


def overlay_docs() -> list[dict[str, Any]]:
    done = run(tool("kubectl"), "kustomize", str(OVERLAY))
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _registry_qualified(image: str) -> bool:
    """``host[:port]/path`` with a tag or a digest: a name no cluster resolves to Docker Hub's library."""
    name = image.split("@", 1)[0]
    first, slash, rest = name.partition("/")
    has_host = bool(slash) and ("." in first or ":" in first or first == "localhost")
    return has_host and ("@sha256:" in image or ":" in rest)


def test_the_overlay_renders_with_a_pullable_image_name_and_a_namespace() -> None:
    docs = overlay_docs()
    base = kustomize_by_hand()
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in base
    )
    pod = gateway_pod(docs)["spec"]
    images = {c["name"]: c["image"] for c in [*pod["containers"], *pod["initContainers"]]}
    assert len(set(images.values())) == 1, "the init container runs the gateway's own image"
    (image,) = set(images.values())
    assert image != "routegate:0.1.0" and _registry_qualified(image), image
    assert not _registry_qualified("routegate:0.1.0") and not _registry_qualified("ghcr.io/x/routegate")
    for doc in docs:
        assert doc["metadata"].get("namespace") == "routegate", doc["metadata"]["name"]
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


# --------------------------------------------------------------------------- checkov


def checkov() -> str:
    """checkov from $CHECKOV, the virtualenv `make test` gives it (scripts/install-test-deps.sh: it
    pins an older `packaging` than pytest's), or PATH; missing, it fails under CI and skips elsewhere."""
    own = ROOT / ".venv-checkov" / "bin" / "checkov"
    found = os.environ.get("CHECKOV") or (str(own) if own.exists() else None) or shutil.which("checkov")
    if found is None:
        return need_binary("checkov")
    return found


@pytest.mark.parametrize("target", ["deploy", "overlay"])
def test_checkov_finds_nothing(tmp_path: Path, target: str) -> None:
    args = ["-d", str(DEPLOY)]
    if target == "overlay":
        rendered = tmp_path / "overlay.yaml"
        rendered.write_text(yaml.safe_dump_all(overlay_docs()))
        args = ["-f", str(rendered), "--framework", "kubernetes"]
    done = subprocess.run(
        [checkov(), *args, "--compact", "--quiet", "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
