"""Which ``pagination:`` keys each style takes: defined in config (``gateway.config.pagination_keys``)."""

from __future__ import annotations

from gateway.config.pagination_keys import STYLE_KEYS, check_pagination

__all__ = ["STYLE_KEYS", "check_pagination"]
