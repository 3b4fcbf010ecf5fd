"""Sandbox upstreams: local emulations of the Observable and PostHog APIs.

The runner is deliberately not re-exported, so ``python -m sandbox.runner``
does not import itself twice.
"""

from .control import SANDBOX_STATE, Fault, SandboxState
from .observable import (
    OBSERVABLE_STATE,
    SANDBOX_LOGIN,
    SANDBOX_T_TOKEN,
    ObservableState,
    make_session_cookie,
)
from .observable import create_app as create_observable_app
from .posthog import POSTHOG_STATE, SANDBOX_POSTHOG_KEY, PostHogState
from .posthog import create_app as create_posthog_app

__all__ = [
    "OBSERVABLE_STATE",
    "POSTHOG_STATE",
    "SANDBOX_LOGIN",
    "SANDBOX_POSTHOG_KEY",
    "SANDBOX_STATE",
    "SANDBOX_T_TOKEN",
    "Fault",
    "ObservableState",
    "PostHogState",
    "SandboxState",
    "create_observable_app",
    "create_posthog_app",
    "make_session_cookie",
]
