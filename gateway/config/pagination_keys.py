"""Which ``pagination:`` keys each style takes, and the checks ``gateway check`` runs on them.

Lives in config: config imports no runtime code, and the strategies in gateway.pagination read it here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config.model import Pagination

_COMMON = frozenset({"style", "items", "has_more", "page_size", "default_limit", "max_limit", "max_items"})

#: style → the keys it accepts (a key of another style is an error, not silently ignored)
STYLE_KEYS: dict[str, frozenset[str]] = {
    "before": _COMMON | {"param", "field"},
    "offset": _COMMON | {"limit_param", "offset_param", "next", "count"},
    "page": _COMMON | {"page_param", "size_param", "first_page", "total"},
    "next_url": _COMMON | {"next", "size_param"},
    "cursor": _COMMON | {"token", "token_param", "size_param"},
}


def check_pagination(p: Pagination) -> Iterator[tuple[str, str]]:
    """(key, problem) for a combination the single keys cannot reject on their own."""
    if p.style == "cursor" and not p.token_path:
        yield "style", "style 'cursor' needs 'token': the body field holding the next token (e.g. meta.next_cursor)"
    if p.style == "page" and p.page_param == p.size_param:
        yield "page_param", "page_param and size_param must differ"
    if p.style == "cursor" and p.token_param == p.size_param:
        yield "token_param", "token_param and size_param must differ"
