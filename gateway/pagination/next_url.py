"""``next_url``: follow the upstream's own next link, from a body field (PostHog's absolute
``next``) or, when no field is declared, from an RFC 8288 ``Link: <...>; rel="next"`` header.

The link is followed only on the upstream's own origin (scheme, host and port of
``base_url``): credentials never leave it, and any other origin is a 502 naming the route.
Only the part after the origin is kept (in the signed cursor too), and the proxy checks
its path against the route's target before fetching it, so neither the upstream nor a
client can point the gateway at another path.
"""

from __future__ import annotations

import re
from typing import Any

from yarl import URL

from gateway.config import Pagination
from gateway.mapping import ShapeDrift
from gateway.pagination.common import Answer, dig, has_more, require

_LINK = re.compile(r"<([^>]*)>([^,<]*)")
_REL = re.compile(r""";\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,]+))""", re.IGNORECASE)


def link_next(header: str) -> str | None:
    """The target of the ``rel="next"`` link in an RFC 8288 ``Link`` header, if any."""
    for target, params in _LINK.findall(header):
        for quoted, bare in _REL.findall(params):
            if "next" in (quoted or bare).lower().split():
                return str(target).strip()
    return None


class NextLinks:
    def __init__(self, pag: Pagination, base_url: URL, route: str) -> None:
        self.pag = pag
        self.base = base_url
        self.prefix = base_url.raw_path.rstrip("/")
        self.route = route

    def request(self, token: Any) -> tuple[list[tuple[str, str]], str | None]:
        if token is not None:
            return [], str(token)
        return ([(self.pag.size_param, str(self.pag.page_size))] if self.pag.size_param else []), None

    def advance(self, token: Any, answer: Answer, items: list[Any]) -> Any:
        if self.pag.next_path:
            require(answer.body, self.pag.next_path, self.route)
        if has_more(self.pag, answer.body) is False:
            return None
        raw = dig(answer.body, self.pag.next_path) if self.pag.next_path else self._header_link(answer)
        if not isinstance(raw, str) or not raw:
            return None
        return self.after_origin(raw, answer.url or self.base)

    @staticmethod
    def _header_link(answer: Answer) -> str | None:
        getall = getattr(answer.headers, "getall", None)
        values = getall("Link", []) if getall is not None else [answer.headers.get("Link", "")]
        return link_next(", ".join(values))

    def after_origin(self, raw: str, current: URL) -> str:
        """The link (resolved against the page it came from) as the path and query below
        ``base_url``; a 502 if it leaves the upstream's origin or base path."""
        try:
            url = current.join(URL(raw))
            same = (url.scheme, url.host, url.explicit_port or url.port) == (
                self.base.scheme,
                self.base.host,
                self.base.explicit_port or self.base.port,
            )
        except ValueError:
            same = False
        if not same or not url.raw_path.startswith(self.prefix + "/"):
            raise ShapeDrift(
                "the upstream's next link leaves its origin or base path; it is not followed",
                code="pagination_bad_link",
                route=self.route,
            )
        rest = url.raw_path[len(self.prefix) :]
        return rest + (f"?{url.raw_query_string}" if url.raw_query_string else "")
