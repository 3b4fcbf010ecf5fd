"""When each upstream credential expires, read from the credential itself.

Observable's ``I`` session cookie (and any JWT) carries its expiry in a dot-separated
segment of base64url JSON; an ``expiry:`` entry under an upstream's ``auth`` says which
segment and field.  The value is resolved at scrape time through ``Credentials``, which
re-reads credential files when they change, so a cookie renewed on disk shows its new
expiry at the next scrape, without a restart.  Only the timestamp ever leaves this
module; an undecodable credential simply has no known expiry.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.auth import Credentials
from gateway.config import AuthSpec, Config, ExpirySpec, Secret

METRIC = "gateway_upstream_credential_expiry_timestamp_seconds"
_DOC = "When the upstream credential expires, read from the credential itself (absent when unknown)."


@dataclass(frozen=True, slots=True)
class CredentialExpiry:
    upstream: str
    credential: str
    #: seconds since the epoch; None when no credential is set or it cannot be decoded
    expires_at: float | None


def decode_expiry(spec: ExpirySpec, value: str) -> float | None:
    """The expiry (seconds since the epoch) carried by ``value``, or None."""
    segments = unquote(value.strip()).split(".")
    if spec.segment >= len(segments):
        return None
    raw = segments[spec.segment]
    try:
        data: Any = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        return None
    for part in spec.field.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    if isinstance(data, bool) or not isinstance(data, int | float):
        return None
    return float(data) / 1000 if spec.unit == "ms" else float(data)


def _secret(auth: AuthSpec, credential: str) -> Secret | None:
    if credential == "bearer":
        return auth.bearer
    kind, _, name = credential.partition(":")
    for key, secret in auth.cookies if kind == "cookie" else auth.headers:
        if key == name:
            return secret
    return None


def expiries(config: Config, creds: Credentials) -> list[CredentialExpiry]:
    """Every credential the config knows how to date, with its current expiry."""
    out = []
    for up in config.upstreams.values():
        spec = up.auth.expiry if up.auth is not None else None
        if up.auth is None or spec is None:
            continue
        secret = _secret(up.auth, spec.credential)
        value = creds.resolve(secret) if secret is not None else None
        out.append(CredentialExpiry(up.name, spec.credential, decode_expiry(spec, value) if value else None))
    return out


class ExpiryCollector(Collector):
    """Exports ``gateway_upstream_credential_expiry_timestamp_seconds`` at every scrape."""

    def __init__(self, config: Callable[[], Config], creds: Credentials) -> None:
        self._config = config
        self._creds = creds

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(METRIC, _DOC, labels=["upstream", "credential"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(METRIC, _DOC, labels=["upstream", "credential"])
        for e in expiries(self._config(), self._creds):
            if e.expires_at is not None:
                family.add_metric([e.upstream, e.credential], e.expires_at)
        yield family
