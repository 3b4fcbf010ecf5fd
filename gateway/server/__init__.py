"""The gateway's HTTP server, in parts: state (the runtime and process state), the framing of each handler, the
stable-route dispatcher, the own endpoints, the admin endpoints, and the app that wires them.

``from gateway.server import build_app, GATEWAY`` is the stable way in; the names below are
re-exported for it.
"""

from gateway.server.app import build_app, watch_routes
from gateway.server.framing import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_URL_BYTES,
    error_response,
    new_request_id,
)
from gateway.server.state import GATEWAY, Gateway, Runtime

__all__ = [
    "GATEWAY",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_URL_BYTES",
    "Gateway",
    "Runtime",
    "build_app",
    "error_response",
    "new_request_id",
    "watch_routes",
]
