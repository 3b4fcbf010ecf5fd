"""``cursor``: an opaque token read from a body field and sent back as a query parameter.

The walk ends on an empty or missing token, or when ``has_more`` is false; a token equal
to the one just sent is an upstream that does not advance (502).
"""

from __future__ import annotations

from typing import Any

from gateway.config import Pagination
from gateway.pagination.common import Answer, dig, has_more


class Tokens:
    def __init__(self, pag: Pagination) -> None:
        self.pag = pag

    def request(self, token: Any) -> tuple[list[tuple[str, str]], str | None]:
        query = [(self.pag.token_param, str(token))] if token is not None else []
        if self.pag.size_param:
            query.append((self.pag.size_param, str(self.pag.page_size)))
        return query, None

    def advance(self, token: Any, answer: Answer, items: list[Any]) -> Any:
        if has_more(self.pag, answer.body) is False:
            return None
        nxt = dig(answer.body, self.pag.token_path)
        if isinstance(nxt, bool) or not isinstance(nxt, str | int) or nxt == "":
            return None
        return str(nxt)
