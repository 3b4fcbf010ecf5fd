"""What may be cached, for how long, and under which key.

Keys never identify a response by method + URL alone (the classic way caches leak
one user's data to another): they also carry the calling client's key *name*, a hash
of the upstream credential the gateway would send, the route's ``vary`` headers and
a fingerprint of the route's config.  The readable part of a key (route name and
canonical stable path) is what purges and invalidations match on.

Invalidation uses *markers* rather than deleting keys: every write bumps a global
sequence number and stamps it on markers for the written path (its whole subtree)
and for its collection (that path only; a POST, which creates a member, only the
latter).  An entry remembers the sequence at which its fill started and is valid
only while no marker on its path is newer.  That is O(path depth) per lookup, works
the same in-process and in Redis, and also drops the result of a fill that was
still running when the write happened.
"""

from __future__ import annotations

import dataclasses
import email.utils
import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from urllib.parse import quote

from multidict import MultiMapping

from gateway.config import Route, RouteCache, Upstream
from gateway.credential_id import credential_fingerprint

#: the client identity when no client keys are configured (mirrors gateway.access.ANONYMOUS)
NO_CREDENTIAL = "-"


@dataclass(frozen=True, slots=True)
class ClientDirectives:
    """The caller's ``Cache-Control`` (and ``Pragma: no-cache``)."""

    no_store: bool = False
    no_cache: bool = False
    max_age: float | None = None


@dataclass(frozen=True, slots=True)
class UpstreamVerdict:
    """What the upstream's ``Cache-Control``/``Expires`` allow for the response it sent."""

    #: False when marked private, no-store or no-cache
    shareable: bool = True
    #: an upper bound on freshness (max-age, s-maxage or Expires), None when the upstream says nothing
    max_fresh: float | None = None


def _directives(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        if name:
            out[name.strip().lower()] = arg.strip().strip('"')
    return out


def _seconds(text: str) -> float | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return float(max(value, 0))


#: a request without Cache-Control or Pragma (the same object every time)
_NO_DIRECTIVES = ClientDirectives()


def client_directives(headers: Mapping[str, str]) -> ClientDirectives:
    raw = headers.get("Cache-Control")
    if raw is None and "Pragma" not in headers:
        return _NO_DIRECTIVES  # most calls: nothing to parse
    cc = _directives(raw or "")
    no_cache = "no-cache" in cc or "no-cache" in headers.get("Pragma", "").lower()
    max_age = _seconds(cc["max-age"]) if "max-age" in cc else None
    return ClientDirectives(no_store="no-store" in cc, no_cache=no_cache, max_age=max_age)


def upstream_verdict(header_sets: Iterable[MultiMapping[str]], now: float) -> UpstreamVerdict:
    """The strictest reading over every upstream response that went into one stable response."""
    shareable = True
    bound: float | None = None
    for headers in header_sets:
        cc = _directives(",".join(headers.getall("Cache-Control", [])))
        if {"private", "no-store", "no-cache"} & set(cc):
            shareable = False
        limit: float | None = None
        for name in ("s-maxage", "max-age"):  # a shared cache reads s-maxage first
            if name in cc:
                limit = _seconds(cc[name])
                limit = 0.0 if limit is None else limit
                break
        expires = headers.get("Expires")
        if limit is None and expires is not None:
            limit = _expires_in(expires, headers.get("Date"), now)
        if limit is not None:
            bound = limit if bound is None else min(bound, limit)
    return UpstreamVerdict(shareable, bound)


def _expires_in(expires: str, date: str | None, now: float) -> float:
    """Seconds until ``Expires``, measured against the upstream's own ``Date`` (no clock skew)."""
    try:
        until = email.utils.parsedate_to_datetime(expires).timestamp()
    except (TypeError, ValueError, IndexError):
        return 0.0  # an invalid Expires (such as "0") means already expired
    base = now
    if date:
        try:
            base = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError):
            base = now
    return max(0.0, until - base)


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class CacheKey:
    route: str
    #: the canonical stable path (path params re-quoted), shared by every query of the resource
    path: str
    #: hash of method, normalized query, client, credential, vary headers and route fingerprint
    digest: str
    #: the key as the backends store it, made once (a hit reads it several times)
    text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", f"{self.route}:{self.path}#{self.digest}")


def canonical_path(route: Route, path_params: Mapping[str, str]) -> str:
    """``/v1/x/{id}`` with ``id`` quoted one way, so ``%41bc`` and ``Abc`` share entries and markers."""
    segs = []
    for seg in route.path.segments:
        segs.append(quote(path_params[seg.parts[0][1]], safe="") if seg.is_single_param else seg.raw)
    return "/" + "/".join(segs)


def credential_id(auth_headers: Mapping[str, str]) -> str:
    """A one-way identity of the upstream credential: equal for equal secrets, never the secret."""
    if not auth_headers:
        return NO_CREDENTIAL
    return credential_fingerprint(auth_headers)


def fingerprint(route: Route, upstream: Upstream) -> str:
    """Changes when the route's mapping or upstream does (not for edits elsewhere in the file).

    The same in every process: replicas sharing a Redis cache must compute one key for one URL,
    and a ``repr`` of the route is not that (a frozenset's order follows the per-process
    ``PYTHONHASHSEED``), hence ``_canonical``."""
    stable = replace(route, line=0, description="", targets=tuple(replace(t, line=0) for t in route.targets))
    text = f"{_canonical(stable)!r}|{upstream.base_url}|{_canonical(upstream.headers)!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _canonical(value: object) -> object:
    """``value`` with every set sorted and every dataclass spelled out: a ``repr`` that does not
    depend on the process's hash seed."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, tuple((f.name, _canonical(getattr(value, f.name))) for f in fields(value)))
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted((_canonical(v) for v in value), key=repr)))
    if isinstance(value, Mapping):
        return ("map", tuple(sorted(((repr(k), _canonical(v)) for k, v in value.items()), key=lambda kv: kv[0])))
    if isinstance(value, (tuple, list)):
        return tuple(_canonical(v) for v in value)
    return value


def make_key(
    route: Route,
    spec: RouteCache,
    route_fingerprint: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    client: str,
    credential: str,
) -> CacheKey:
    """HEAD shares GET's entry: aiohttp answers a HEAD from the same response without the body."""
    h = hashlib.sha256()
    norm = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(query))
    vary = "\x00".join(f"{name}={headers.get(name, '')}" for name in spec.vary)
    for part in (route_fingerprint, "GET", norm, client, credential, vary):
        h.update(part.encode())
        h.update(b"\x1f")
    return CacheKey(route.name, path, h.hexdigest()[:40])


# --------------------------------------------------------------------------- invalidation markers


def _ancestors(path: str) -> list[str]:
    """``/a/b`` → ``/``, ``/a``, ``/a/b``."""
    out = ["/"]
    parts = [p for p in path.split("/") if p]
    for i in range(1, len(parts) + 1):
        out.append("/" + "/".join(parts[:i]))
    return out


def read_markers(route: str, path: str) -> tuple[str, ...]:
    """Markers whose bump invalidates an entry of ``route`` at ``path``."""
    # remembered for the paths of ordinary ids; a caller cannot fill memory with long ones
    return _read_markers(route, path) if len(path) <= _REMEMBERED_PATH else _markers_of(route, path)


_REMEMBERED_PATH = 256


@functools.lru_cache(maxsize=4096)
def _read_markers(route: str, path: str) -> tuple[str, ...]:
    return _markers_of(route, path)


def _markers_of(route: str, path: str) -> tuple[str, ...]:
    return (*(f"t:{p}" for p in _ancestors(path)), f"s:{path}", f"r:{route}")


def write_markers(method: str, path: str, also_routes: Iterable[str] = ()) -> tuple[str, ...]:
    """PATCH/PUT/DELETE at ``path`` drop it, everything below it, and the collection it sits in.

    A POST creates a member of the collection at ``path``: that collection's own entries
    (every page and query of it) go; its existing members are untouched.
    """
    extra = tuple(f"r:{name}" for name in also_routes)
    if method == "POST":
        return (f"s:{path}", *extra)
    parent = path.rsplit("/", 1)[0] or "/"
    return (f"t:{path}", f"s:{parent}", *extra)


def purge_markers(route: str | None, prefix: str | None) -> tuple[str, ...]:
    out: list[str] = []
    if route is not None:
        out.append(f"r:{route}")
    if prefix is not None or route is None:
        out.append(f"t:{normalize_prefix(prefix or '/')}")
    return tuple(out)


def normalize_prefix(prefix: str) -> str:
    return "/" + "/".join(p for p in prefix.split("/") if p)


def under(path: str, prefix: str) -> bool:
    """Whole-segment prefix match: ``/a/1`` is under ``/a`` and ``/a/1``, not under ``/a/10``."""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")
