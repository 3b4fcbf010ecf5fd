"""Shared sandbox machinery: request counting, fault switches and the /_sandbox/ control API.

The gateway's tests need to see how many upstream calls were made and to make
the upstream misbehave; both must work in-process (Python attributes) and
across processes (HTTP control endpoints), so everything lives on one state
object that a middleware and the control routes share.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import web

from .switches import names_for

__all__ = [
    "CONTROL_PREFIX",
    "SANDBOX_STATE",
    "Fault",
    "SandboxState",
    "build_app",
]

CONTROL_PREFIX = "/_sandbox/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Fault:
    """One misbehaviour applied to every request whose path starts with a prefix.

    ``status`` answers that status with the service's usual JSON error body,
    ``drop_field`` removes a key from the JSON items/objects the service returns,
    ``reset`` closes the connection without answering.
    """

    status: int | None = None
    drop_field: str | None = None
    reset: bool = False

    @classmethod
    def from_json(cls, obj: object) -> Fault:
        """Parse the HTTP form (``{"status": 404}`` etc.); ValueError on nonsense."""
        if isinstance(obj, Fault):
            return obj
        if not isinstance(obj, Mapping):
            raise ValueError("a fault must be an object")
        unknown = set(obj) - {"status", "drop_field", "reset"}
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        status = obj.get("status")
        if status is not None and (not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599):
            raise ValueError("fault status must be an HTTP status code")
        drop_field = obj.get("drop_field")
        if drop_field is not None and not isinstance(drop_field, str):
            raise ValueError("drop_field must be a string")
        reset = obj.get("reset", False)
        if not isinstance(reset, bool):
            raise ValueError("reset must be a boolean")
        if status is None and drop_field is None and not reset:
            raise ValueError("a fault needs status, drop_field or reset")
        return cls(status=status, drop_field=drop_field, reset=reset)

    def to_json(self) -> dict[str, Any]:
        """The HTTP form, with only the keys that are set."""
        out: dict[str, Any] = {}
        if self.status is not None:
            out["status"] = self.status
        if self.drop_field is not None:
            out["drop_field"] = self.drop_field
        if self.reset:
            out["reset"] = True
        return out


class SandboxState:
    """Counters, request log and fault switches common to both sandboxes."""

    #: which sandbox this is: the switches it accepts are sandbox.switches' rows for it
    service = ""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.log: list[dict[str, Any]] = []
        self.latency_ms: float = 0.0
        self.faults: dict[str, Fault] = {}

    # -- counters -------------------------------------------------------------

    @property
    def total_requests(self) -> int:
        """Requests received since the last reset (control endpoints excluded)."""
        return sum(self.requests.values())

    def count(self, method: str, path: str) -> int:
        """How many ``method path`` requests arrived (0 if none)."""
        return self.requests[(method.upper(), path)]

    def requests_json(self) -> dict[str, Any]:
        """Body of ``GET /_sandbox/requests``."""
        return {
            "total": self.total_requests,
            "by_path": {f"{m} {p}": n for (m, p), n in sorted(self.requests.items())},
        }

    def reset_counters(self) -> None:
        self.requests.clear()
        self.log.clear()

    # -- switches -------------------------------------------------------------

    def reset_switches(self) -> None:
        """Back to a well-behaved upstream; subclasses reset their own switches too."""
        self.latency_ms = 0.0
        self.faults.clear()

    def reset(self) -> None:
        """What ``POST /_sandbox/reset`` does: zero counters and clear every switch."""
        self.reset_counters()
        self.reset_switches()

    def switches_json(self) -> dict[str, Any]:
        """Body of ``GET /_sandbox/faults``."""
        return {
            "latency_ms": self.latency_ms,
            "faults": {prefix: f.to_json() for prefix, f in sorted(self.faults.items())},
        }

    def apply_switches(self, body: Mapping[str, Any]) -> None:
        """Apply a ``POST /_sandbox/faults`` body; ValueError leaves the state untouched.

        Top-level keys replace; ``faults`` merges by prefix, a null value removing it.
        """
        known = names_for(self.service) if self.service else set(self.switches_json())
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"unknown switches: {sorted(unknown)}")
        latency = body.get("latency_ms", self.latency_ms)
        if not isinstance(latency, int | float) or isinstance(latency, bool) or latency < 0:
            raise ValueError("latency_ms must be a non-negative number")
        faults = dict(self.faults)
        raw_faults = body.get("faults", {})
        if not isinstance(raw_faults, Mapping):
            raise ValueError("faults must be an object keyed by path prefix")
        for prefix, raw in raw_faults.items():
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                raise ValueError("fault prefixes must be paths starting with '/'")
            if raw is None:
                faults.pop(prefix, None)
            else:
                faults[prefix] = Fault.from_json(raw)
        self._apply_extra_switches(body)
        self.latency_ms = float(latency)
        self.faults = faults

    def _apply_extra_switches(self, body: Mapping[str, Any]) -> None:
        """Hook for service-specific switches; validate everything before mutating."""

    def fault_for(self, path: str) -> Fault | None:
        """The fault of the longest prefix matching ``path``, if any."""
        best: str | None = None
        for prefix in self.faults:
            if path.startswith(prefix) and (best is None or len(prefix) > len(best)):
                best = prefix
        return None if best is None else self.faults[best]

    # -- service flavour ------------------------------------------------------

    def error_body(self, status: int, method: str = "GET") -> dict[str, Any]:
        """The service's usual JSON error body for ``status``; overridden per service."""
        return {"error": HTTPStatus(status).phrase}

    def error_response(self, status: int, method: str = "GET") -> web.Response:
        return web.json_response(self.error_body(status, method), status=status)


SANDBOX_STATE: web.AppKey[SandboxState] = web.AppKey("sandbox_state", SandboxState)

S = TypeVar("S", bound=SandboxState)


def _has_auth(request: web.Request) -> bool:
    return "Authorization" in request.headers or "Cookie" in request.headers


def _drop(data: Any, field: str) -> Any:
    """Remove ``field`` from the object, the items of a list, or the items of ``results``."""
    if isinstance(data, list):
        return [_drop_one(item, field) for item in data]
    if isinstance(data, dict):
        out = _drop_one(data, field)
        if isinstance(out.get("results"), list):
            out["results"] = [_drop_one(item, field) for item in out["results"]]
        return out
    return data


def _drop_one(item: Any, field: str) -> Any:
    if isinstance(item, dict):
        return {k: v for k, v in item.items() if k != field}
    return item


@web.middleware
async def _sandbox_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count, log, delay and sabotage every non-control request."""
    state = request.app[SANDBOX_STATE]
    path = request.path
    if path.startswith(CONTROL_PREFIX):
        return await handler(request)
    state.requests[(request.method, path)] += 1
    state.log.append(
        {
            "method": request.method,
            "path": path,
            "query_string": request.query_string,
            "has_auth": _has_auth(request),
        }
    )
    if state.latency_ms > 0:
        await asyncio.sleep(state.latency_ms / 1000)
    fault = state.fault_for(path)
    if fault is not None and fault.reset:
        if request.transport is not None:
            request.transport.close()
        # Writing to the closed transport makes aiohttp drop the response quietly.
        return web.Response(status=500)
    if fault is not None and fault.status is not None:
        return state.error_response(fault.status, request.method)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status in (404, 405) and not (exc.text or "").startswith("{"):
            # aiohttp's router misses: answer them in the service's own dialect.
            return state.error_response(exc.status, request.method)
        raise
    if fault is not None and fault.drop_field is not None:
        response = _drop_field(response, fault.drop_field)
    return response


def _drop_field(response: web.StreamResponse, field: str) -> web.StreamResponse:
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return response
    body = response.body
    if not isinstance(body, bytes | bytearray) or not body:
        return response
    data = _drop(json.loads(body), field)
    skip = ("content-length", "content-type")
    headers = {k: v for k, v in response.headers.items() if k.lower() not in skip}
    return web.json_response(data, status=response.status, headers=headers)


async def _get_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[SANDBOX_STATE].requests_json())


async def _get_log(request: web.Request) -> web.Response:
    return web.json_response({"log": request.app[SANDBOX_STATE].log})


async def _post_reset(request: web.Request) -> web.Response:
    state = request.app[SANDBOX_STATE]
    state.reset()
    return web.json_response(state.switches_json())


async def _get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[SANDBOX_STATE].switches_json())


async def _post_faults(request: web.Request) -> web.Response:
    state = request.app[SANDBOX_STATE]
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "body must be JSON"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "body must be a JSON object"}, status=400)
    try:
        state.apply_switches(body)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(state.switches_json())


def build_app(state: S, key: web.AppKey[S]) -> web.Application:
    """An application wired to ``state`` (under ``key`` and SANDBOX_STATE) with control routes."""
    app = web.Application(middlewares=[_sandbox_middleware])
    base: SandboxState = state
    app[key] = state
    app[SANDBOX_STATE] = base
    app.router.add_get(CONTROL_PREFIX + "requests", _get_requests)
    app.router.add_get(CONTROL_PREFIX + "log", _get_log)
    app.router.add_post(CONTROL_PREFIX + "reset", _post_reset)
    app.router.add_get(CONTROL_PREFIX + "faults", _get_faults)
    app.router.add_post(CONTROL_PREFIX + "faults", _post_faults)
    return app
