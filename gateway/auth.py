"""Upstream credentials: resolved per request from env vars and files, never from YAML.

Files are re-read when their mtime or size changes, so a renewed session cookie is
picked up without a restart.  Values never leave this module except as outgoing
headers; errors name the variable or file to set, never what was (or was not) in it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from gateway.config import AuthSpec, Secret, SecretSource, Upstream
from gateway.errors import BadGateway

#: what no header value may hold (a tab may)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


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
        out, missing, unusable = self._headers(upstream.auth)
        if missing:
            what = "no usable credentials" if unusable else "no credentials configured"
            raise CredentialsMissing(
                f"upstream {upstream.name!r} has {what} ({'; '.join(missing)})",
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
        """For each credential of ``upstream`` with no value now, what to set, or which file that is
        set could not be used and why (``gateway check`` warns)."""
        return self._headers(upstream.auth)[1]

    def _headers(self, spec: AuthSpec | None) -> tuple[dict[str, str], list[str], bool]:
        """The headers, what is missing (a line each), and whether any of it is a source set but unusable."""
        out: dict[str, str] = {}
        missing: list[str] = []
        unusable_any = False
        if spec is None:
            return out, missing, unusable_any
        named: list[tuple[str, str, Secret]] = []  # (kind, name, secret)
        if spec.bearer is not None:
            named.append(("bearer", "", spec.bearer))
        named += [("cookie", name, secret) for name, secret in spec.cookies]
        named += [("header", name, secret) for name, secret in spec.headers]
        cookies = []
        for kind, name, secret in named:
            value, unusable = self._resolve(secret)
            if value is None:
                # a file that is set but cannot be used is named with why; "set X" only when nothing is set
                label = "bearer token" if kind == "bearer" else f"{kind} {name}"
                missing.append(f"{label}: {'; '.join(unusable) if unusable else 'set ' + secret.hint()}")
                unusable_any = unusable_any or bool(unusable)
            elif kind == "bearer":
                out["Authorization"] = f"Bearer {value}"
            elif kind == "cookie":
                cookies.append(f"{name}={value}")
            else:
                out[name] = value
        if cookies:
            out["Cookie"] = "; ".join(cookies)
        return out, missing, unusable_any

    def resolve(self, secret: Secret) -> str | None:
        return self._resolve(secret)[0]

    def _resolve(self, secret: Secret) -> tuple[str | None, list[str]]:
        """The first source's value, else None and why each source that is set could not be used."""
        unusable: list[str] = []
        for source in secret.sources:
            try:
                value = self._from(source)
            except Unusable as exc:
                unusable.append(str(exc))
                continue
            if value:
                return value, []
        return None, unusable

    def _from(self, source: SecretSource) -> str | None:
        """The source's value; None when it is not set; ``Unusable`` when it is set (a file named)
        but holds no value: the message names the file and why, never anything read from it."""
        if source.kind == "env":
            return self._env.get(source.name) or None  # a line break in it: bad_upstream_header (headers_for)
        path = source.name if source.kind == "file" else self._env.get(source.name, "")
        if not path:
            return None
        where = f"the file {path}" if source.kind == "file" else f"{source.name}={path}"
        text = self._read(path, where)
        if source.json_key is None:
            if not text.strip():
                raise Unusable(f"{where} is empty")
            return _one_line(text.strip(), where)
        return _one_line(_json_value(text, source.json_key, where), where)

    def _read(self, path: str, where: str) -> str:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise Unusable(f"{where}: {_os_reason(exc)}") from None
        cached = self._files.get(path)
        if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
            return cached[2]
        try:
            with open(path, encoding="utf-8-sig") as fh:  # a leading BOM (Notepad, PowerShell) is no part of a key
                text = fh.read()
        except OSError as exc:
            raise Unusable(f"{where}: {_os_reason(exc)}") from None
        except UnicodeDecodeError:
            raise Unusable(f"{where} is not UTF-8 text") from None
        self._files[path] = (st.st_mtime_ns, st.st_size, text)
        return text


class Unusable(Exception):
    """A credential source that is set but yields no value; the message is safe to show (no content)."""


def _one_line(value: str, where: str) -> str:
    """A credential goes into one header line: a line break or another control character in a file's
    value is the file written wrong (two values, a stray character), said here with the file's name
    rather than later as a header the upstream call cannot send."""
    found = _CONTROL.search(value)
    if found is not None:
        what = "more than one line" if found.group() in "\r\n" else "a control character"
        raise Unusable(f"{where} holds {what} (a credential is one line)")
    return value


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    return exc.strerror or type(exc).__name__


def _json_value(text: str, key: str, where: str) -> str:
    """A key of a JSON object, or the ``value`` of ``{"name": key}`` in a browser cookie export."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        # the decoder's own words (e.g. "Expecting property name enclosed in double quotes") and where:
        # never the text around it, which may be the secret
        raise Unusable(f"{where} is not valid JSON ({exc.msg}, line {exc.lineno}, column {exc.colno})") from None
    if isinstance(data, dict):
        value = data.get(key)
        if value:
            return str(value)
        found = "an empty" if key in data else "no"
        raise Unusable(f"{where} has {found} {key!r} key (expected a JSON object with {key!r}, or a browser export)")
    if isinstance(data, list):
        for entry in data:
            if isinstance(entry, dict) and entry.get("name") == key and entry.get("value"):
                return str(entry["value"])
        raise Unusable(f"{where} has no cookie named {key!r} with a value (a browser export: [{{name, value}}, ...])")
    raise Unusable(f"{where} holds JSON that is neither an object nor a list (expected {{{key!r}: ...}})")


def secrets_of(spec: AuthSpec | None, creds: Credentials) -> list[str]:
    """Every secret value currently configured (for redaction and leak tests)."""
    if spec is None:
        return []
    secrets = [spec.bearer] if spec.bearer else []
    secrets += [s for _, s in spec.cookies] + [s for _, s in spec.headers]
    return [v for s in secrets if (v := creds.resolve(s))]
