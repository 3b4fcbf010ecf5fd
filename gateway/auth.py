"""Upstream credentials: resolved per request from env vars and files, never from YAML.

Files are re-read when their mtime or size changes, so a renewed session cookie is
picked up without a restart.  Values never leave this module except as outgoing
headers; errors name the variable or file to set, never what was (or was not) in it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from gateway.config import AuthSpec, Secret, SecretSource, Upstream
from gateway.errors import BadGateway


class CredentialsMissing(BadGateway):
    kind = "credentials"


class Credentials:
    """Builds the auth headers of an upstream call."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if env is None else env
        self._files: dict[str, tuple[int, int, str]] = {}

    def headers_for(self, upstream: Upstream, route: str) -> dict[str, str]:
        """The auth headers of a call; a value with a line break (a secret file's stray CR/LF inside it)
        is refused here, where it is resolved: the gateway's other headers are checked where they are made
        (the config at load, the request id by its pattern), so no call scans them again."""
        out, missing = self._headers(upstream.auth)
        if missing:
            raise CredentialsMissing(
                f"upstream {upstream.name!r} has no credentials configured ({'; '.join(missing)})",
                code="upstream_credentials_missing",
                route=route,
            )
        joined = "".join(out.values())
        if "\r" in joined or "\n" in joined:
            raise BadGateway(
                f"a header for upstream {upstream.name!r} holds a line break; nothing was sent",
                kind="config",
                code="bad_upstream_header",
                route=route,
            )
        return out

    def missing(self, upstream: Upstream) -> list[str]:
        """What to set for each credential of ``upstream`` that has no value now (``gateway check`` warns)."""
        return self._headers(upstream.auth)[1]

    def _headers(self, spec: AuthSpec | None) -> tuple[dict[str, str], list[str]]:
        out: dict[str, str] = {}
        missing: list[str] = []
        if spec is None:
            return out, missing
        if spec.bearer is not None:
            token = self.resolve(spec.bearer)
            if token is None:
                missing.append(f"bearer token: set {spec.bearer.hint()}")
            else:
                out["Authorization"] = f"Bearer {token}"
        cookies = []
        for name, secret in spec.cookies:
            value = self.resolve(secret)
            if value is None:
                missing.append(f"cookie {name}: set {secret.hint()}")
            else:
                cookies.append(f"{name}={value}")
        if cookies:
            out["Cookie"] = "; ".join(cookies)
        for name, secret in spec.headers:
            value = self.resolve(secret)
            if value is None:
                missing.append(f"header {name}: set {secret.hint()}")
            else:
                out[name] = value
        return out, missing

    def resolve(self, secret: Secret) -> str | None:
        for source in secret.sources:
            value = self._from(source)
            if value:
                return value
        return None

    def _from(self, source: SecretSource) -> str | None:
        if source.kind == "env":
            return self._env.get(source.name) or None
        path = source.name if source.kind == "file" else self._env.get(source.name, "")
        if not path:
            return None
        text = self._read(path)
        if text is None:
            return None
        if source.json_key is None:
            return text.strip() or None
        return _json_value(text, source.json_key)

    def _read(self, path: str) -> str | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        cached = self._files.get(path)
        if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
            return cached[2]
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError:
            return None
        self._files[path] = (st.st_mtime_ns, st.st_size, text)
        return text


def _json_value(text: str, key: str) -> str | None:
    """A key of a JSON object, or the ``value`` of ``{"name": key}`` in a browser cookie export."""
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict):
        value = data.get(key)
        return str(value) if value else None
    if isinstance(data, list):
        for entry in data:
            if isinstance(entry, dict) and entry.get("name") == key and entry.get("value"):
                return str(entry["value"])
    return None


def secrets_of(spec: AuthSpec | None, creds: Credentials) -> list[str]:
    """Every secret value currently configured (for redaction and leak tests)."""
    if spec is None:
        return []
    secrets = [spec.bearer] if spec.bearer else []
    secrets += [s for _, s in spec.cookies] + [s for _, s in spec.headers]
    return [v for s in secrets if (v := creds.resolve(s))]
