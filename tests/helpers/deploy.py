"""Helpers to validate deploy/ offline: tools, rendered manifests, compose, the shipped Redis init."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


DEPLOY = ROOT / "deploy"


K8S = DEPLOY / "k8s"


RENDERED = K8S / "config" / "routes.yaml"


CI = os.environ.get("CI") == "true"


#: the oldest Kubernetes the base supports, and the newest schemas bundled
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())


def tool(name: str) -> str:
    """A validator binary: from the venv (dev extra) or PATH; missing fails under CI."""
    venv = Path(sys.executable).parent / name
    found = str(venv) if venv.exists() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed (pip install -e '.[dev]', or scripts/install-test-deps.sh)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses duplicate keys (PyYAML would silently keep the last one)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(k, deep=True) for k, _ in node.value]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {sorted(dupes)}", node.start_mark)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_all(path: Path) -> list[Any]:
    return [d for d in yaml.load_all(path.read_text(), Loader=_StrictLoader) if d is not None]


def secret_keys_used(value: Any) -> Iterator[str]:
    """Keys of the routegate-secrets Secret a manifest takes, by secretKeyRef or as secret volume files."""
    if isinstance(value, dict):
        ref = value.get("secretKeyRef")
        if isinstance(ref, dict) and ref.get("name") == "routegate-secrets":
            yield ref["key"]
        vol = value.get("secret")
        if isinstance(vol, dict) and vol.get("secretName") == "routegate-secrets":
            assert "items" in vol, "a secret volume without items mounts every key"
            yield from (item["key"] for item in vol["items"])
        for v in value.values():
            yield from secret_keys_used(v)
    elif isinstance(value, list):
        for v in value:
            yield from secret_keys_used(v)


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and run(docker, "compose", "version").returncode == 0:
        return [docker, "compose"]
    return [tool("docker-compose")]


def _compose_tree(tmp_path: Path, env: str | None) -> Path:
    """deploy/ copied beside a build context, with an env file like an operator's."""
    shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns(".env"))
    if env is not None:
        (tmp_path / "deploy" / ".env").write_text(env)
    return tmp_path / "deploy"


FILLED = {
    "ROUTEGATE_CLIENT_KEY": "client-key",
    "GRAFANA_ADMIN_PASSWORD": "grafana-pw",
    "POSTHOG_API_KEY": "phx_x",
    "ROUTEGATE_REDIS_PASSWORD": "redis-pw",
}


def filled_env(**values: str | None) -> str:
    """deploy/.env.example filled in as its comments say (None drops a line)."""
    values = {**FILLED, **values}
    lines = []
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        name, eq, _ = line.partition("=")
        if eq and name in values:
            if values[name] is None:
                continue
            line = f"{name}={values[name]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def kustomize_by_hand() -> list[dict[str, Any]]:
    """What `kubectl kustomize deploy/k8s` outputs, for the features the base uses."""
    kust = load_all(K8S / "kustomization.yaml")[0]
    assert set(kust) <= {"apiVersion", "kind", "labels", "resources", "configMapGenerator", "generatorOptions"}
    docs: list[dict[str, Any]] = []
    for res in kust["resources"]:
        docs += load_all(K8S / res)
    assert kust["generatorOptions"]["disableNameSuffixHash"] is True
    for gen in kust["configMapGenerator"]:
        data = {}
        for spec in gen.get("files", []):
            key, _, rel = spec.partition("=")
            data[key] = (K8S / rel).read_text()
        for literal in gen.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    for doc in docs:
        for group in kust.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(group["pairs"])
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


class InitResult:
    """What the redis-url init container did: its exit status, its complaint, the URL it wrote."""

    def __init__(self, returncode: int, stderr: str, url: str, mode: int | None) -> None:
        self.returncode, self.stderr, self.url, self.mode = returncode, stderr, url, mode


def run_redis_url_init(workdir: Path, **secret: str) -> InitResult:
    """deploy/k8s/deployment.yaml's redis-url init container, its script run as is, with the
    Secret's keys laid out as its volume mounts them (a key not given: no file, as ``optional``)."""
    dep = by_kind(kustomize_by_hand(), "Deployment", "routegate")
    (init,) = dep["spec"]["template"]["spec"]["initContainers"]
    assert init["command"] == ["python", "-c"]
    script, mounted, out = init["args"]
    secrets_dir = workdir / "redis-secret"
    secrets_dir.mkdir(exist_ok=True)
    for name, value in secret.items():
        (secrets_dir / name).write_text(value + "\n")  # kubectl keeps values as given; a newline is tolerated
    target = workdir / "redis-url"
    assert mounted.startswith("/run/secrets/") and out.startswith("/run/routegate/")
    done = subprocess.run(
        [sys.executable, "-c", script, str(secrets_dir), str(target)], capture_output=True, text=True, timeout=30
    )
    written = target.read_text() if target.exists() else ""
    mode = target.stat().st_mode & 0o777 if target.exists() else None
    return InitResult(done.returncode, done.stderr, written, mode)


def pod_secret_env(workdir: Path, values: dict[str, str], redis_url_file: Path) -> dict[str, str]:
    """The gateway container's secret environment as deploy/k8s/deployment.yaml sets it: only
    NAME_FILE paths, with the Secret's mounted keys written under ``workdir`` instead of /run/secrets."""
    dep = by_kind(kustomize_by_hand(), "Deployment", "routegate")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    files: dict[str, Path] = {}  # the in-pod path of every mounted secret key -> its file here
    for name, path in mounts.items():
        secret = volumes[name].get("secret")
        if secret is not None:
            for item in secret["items"]:
                files[f"{path}/{item['path']}"] = workdir / item["path"]
                files[f"{path}/{item['path']}"].write_text(values.get(item["key"], ""))
    redis_mount = mounts["redis-url"]
    env: dict[str, str] = {}
    for e in c["env"]:
        if e["name"].endswith("_FILE"):
            if e["value"].startswith(redis_mount + "/"):
                env[e["name"]] = str(redis_url_file)
            else:
                env[e["name"]] = str(files[e["value"]])
    return env
