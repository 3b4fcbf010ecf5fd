"""``page``: a page number and a page size (PostHog's notebook activity: ``page`` from 1, ``limit``).

The walk ends on an empty or short page (only an empty one where the upstream's page size is
fixed, ``size_param: null``), when ``total`` (a body field) is reached, or
when ``has_more`` is false.  An upstream ignoring the page number answers page one again:
``common.check_advanced`` turns that into a 502.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Pagination
from gateway.pagination.common import Answer, dig, has_more


class PageNumbers:
    def __init__(self, pag: Pagination) -> None:
        self.pag = pag

    def request(self, token: Any) -> tuple[list[tuple[str, str]], str | None]:
        pag = self.pag
        page = pag.first_page if token is None else int(token)
        size = [(pag.size_param, str(pag.page_size))] if pag.size_param else []
        return [(pag.page_param, str(page)), *size], None

    def advance(self, token: Any, answer: Answer, items: list[Any]) -> Any:
        pag = self.pag
        page = pag.first_page if token is None else int(token)
        if has_more(pag, answer.body) is False:
            return None
        # a page shorter than the size asked for, or the total reached at that size, is the last;
        # where the upstream's size is its own (size_param: null), only an empty page says so: a
        # guessed size could end the list short
        if not pag.size_param:
            return page + 1
        if len(items) < pag.page_size:
            return None
        total = dig(answer.body, pag.total_path) if pag.total_path else None
        if isinstance(total, int) and (page - pag.first_page + 1) * pag.page_size >= total:
            return None
        return page + 1
