"""Who may call the gateway: client API keys per route and method, and admin keys.

Keys are named in routes.yaml and their values read like upstream secrets (env var
or file, re-read on change).  A presented key is compared against every configured
key in constant time, so neither timing nor error text tells how close a guess was.
The key's *name* is the client identity used for cache isolation and logs; the
value never leaves this module.
"""

from __future__ import annotations

import base64
import fnmatch
import hmac

from aiohttp import web

from gateway.auth import Credentials
from gateway.config import AccessSpec, ClientKey, Route
from gateway.errors import Forbidden, Unauthorized

#: the client identity when no client keys are configured (an open, loopback-only gateway)
ANONYMOUS = "-"


def presented_key(request: web.Request) -> str | None:
    """``Authorization: Bearer <key>``, ``X-API-Key: <key>``, or Basic with the key as password.

    Basic exists so a browser can open the admin-guarded ``/status`` page (any user name); it serves every
    route alike (``curl -u :KEY``), as docs/configuration.md says.
    """
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    if header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return request.headers.get("X-API-Key") or None


class Access:
    def __init__(self, spec: AccessSpec, credentials: Credentials) -> None:
        self.spec = spec
        self.credentials = credentials

    @property
    def open(self) -> bool:
        """No client keys configured: anyone who can reach the socket may call."""
        return not self.spec.clients

    def without_value(self) -> list[str]:
        """Keys no request can match now (env var unset, file missing or empty), each with what to set."""
        return [
            f"{section}.keys.{key.name}: no value (set {key.secret.hint()}); requests with this key are refused"
            for section, keys in (("clients", self.spec.clients), ("admin", self.spec.admins))
            for key in keys
            if self.credentials.resolve(key.secret) is None
        ]

    def _identify(self, request: web.Request, keys: tuple[ClientKey, ...], what: str) -> ClientKey:
        given = presented_key(request)
        if given is None:
            raise Unauthorized(
                f"this gateway needs {what}: send Authorization: Bearer <key> or X-API-Key: <key>",
                code="missing_api_key",
                headers={"WWW-Authenticate": 'Bearer realm="routegate"'},
            )
        found: ClientKey | None = None
        for key in keys:  # no early exit: every configured key is compared
            value = self.credentials.resolve(key.secret)
            if value is not None and hmac.compare_digest(value.encode(), given.encode()) and found is None:
                found = key
        if found is None:
            raise Unauthorized(
                "the API key is not valid",
                code="invalid_api_key",
                headers={"WWW-Authenticate": 'Bearer realm="routegate", error="invalid_token"'},
            )
        return found

    def identify(self, request: web.Request) -> ClientKey | None:
        """The presented client key (None on an open gateway); 401 without a valid one."""
        if self.open:
            return None
        return self._identify(request, self.spec.clients, "an API key")

    @staticmethod
    def authorize(key: ClientKey | None, route: Route, method: str) -> None:
        """403 when the identified key may not call ``route`` with ``method``."""
        if key is None:
            return
        if key.routes and not any(fnmatch.fnmatchcase(route.name, g) for g in key.routes):
            raise Forbidden(f"key {key.name!r} may not call route {route.name!r}", code="route_not_allowed")
        if key.methods is not None and method not in key.methods:
            raise Forbidden(
                f"key {key.name!r} may not {method} (allowed: {', '.join(sorted(key.methods))})",
                code="method_not_allowed_for_key",
            )

    def require_admin(self, request: web.Request) -> str:
        """Guard for admin endpoints; they are off (403) until ``admin.keys`` is configured."""
        if not self.spec.admins:
            raise Forbidden("admin endpoints are disabled: configure admin.keys in routes.yaml", code="admin_disabled")
        return self._identify(request, self.spec.admins, "an admin key").name
