"""What a web page in the operator's browser may make the gateway do: nothing.

A gateway on 127.0.0.1 without client keys trusts whoever reaches its socket, and a
browser reaches it on behalf of any page.  Two ways in are closed here, before a
request is routed:

- DNS rebinding: a page on ``evil.example`` re-points that name at 127.0.0.1 and reads
  the gateway as same-origin.  Its requests still say ``Host: evil.example``, so only
  names the operator listed are served (421 otherwise).  IP-literal hosts cannot be
  rebound: loopback and the bound address always pass, any IP when bound to 0.0.0.0
  (Kubernetes probes and Prometheus scrapes use the pod IP).
- Cross-site writes: any page may send a "simple" POST.  Browsers name the page's
  origin in ``Origin`` on every cross-origin write, so a write whose ``Origin`` is not
  the gateway's own is refused (403).  Scripts send no ``Origin``.

Bodies (415 unless JSON, 400 when a route needs one) are checked by the proxy, per route.
The gateway sends no CORS headers, so a page can never read an answer either.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.config.hosts import host_name, ip_of
from gateway.errors import Forbidden, MisdirectedRequest
from gateway.methods import SAFE as _SAFE

#: host names that always mean this machine
LOOPBACK_NAMES = frozenset({"localhost"})
#: distinct Host values whose verdict is remembered (then forgotten all at once)
_MEMO = 256
#: bind addresses that listen on every interface
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})


class HostGuard:
    """The Host allow-list; ``bound`` is the address ``gateway serve`` listens on (None in tests: loopback)."""

    def __init__(self, allowed: tuple[str, ...], bound: str | None = None) -> None:
        self.any = "*" in allowed
        self.names = frozenset(a for a in allowed if not a.startswith("*.")) | LOOPBACK_NAMES
        self.suffixes = tuple(a[1:] for a in allowed if a.startswith("*."))  # ".example.com"
        bound_name = host_name(bound) if bound is not None else "127.0.0.1"
        self.any_ip = bound is not None and bound.strip() in WILDCARD_BINDS
        self.bound_ip = ip_of(bound_name)
        if self.bound_ip is None and bound_name:
            self.names |= {bound_name}
        self._seen: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        """Memoised per Host value: clients repeat one or two, and parsing an IP on every request
        is a tenth of a cache hit's work.  Bounded, so a client inventing hosts grows nothing."""
        if self.any:
            return True
        known = self._seen.get(host)
        if known is None:
            known = self._allows(host)
            if len(self._seen) >= _MEMO:
                self._seen.clear()
            self._seen[host] = known
        return known

    def _allows(self, host: str) -> bool:
        name = host_name(host)
        ip = ip_of(name)
        if ip is not None:  # an address cannot be rebound: loopback, the bound one, or one listed
            return ip.is_loopback or self.any_ip or ip == self.bound_ip or str(ip) in self.names
        return name in self.names or name.endswith(self.suffixes)

    def check(self, method: str, host: str | None, origin: str | None) -> None:
        """421 for a Host not served here; 403 for a write sent by another site's page."""
        if host and not self.allows(host):
            raise MisdirectedRequest(
                f"this gateway does not serve the host {host_name(host)!r}: add it to server.allowed_hosts "
                "in routes.yaml if clients reach the gateway by that name"
            )
        if origin is None or method in _SAFE:
            return
        parts = urlsplit(origin) if origin != "null" else None
        if parts is None or not host or (parts.netloc or "").lower() != host.strip().lower():
            raise Forbidden(
                f"a {method} from a web page of another origin ({origin[:100]}) is refused: "
                "the gateway's writes are for scripts, which send no Origin header",
                code="cross_origin_write",
            )
