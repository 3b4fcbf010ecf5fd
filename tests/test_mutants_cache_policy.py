"""Cache policy: the survivors ``make mutants`` (group ``cache-policy``) found, each killed here.

The policy functions are pure (headers in, verdict/key/markers out), so most of these test them
directly, which is the level their contract lives at; what a reload does to the cache key is
driven through real HTTP (a reload through ``/admin/reload``, the answer's ``X-Cache``).
"""

from __future__ import annotations

import email.utils
import tempfile
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.cache import policy
from gateway.cache.policy import UpstreamVerdict, purge_markers, read_markers, upstream_verdict, write_markers
from gateway.config import Config, load_config
from gateway.server import GATEWAY
from tests.helpers.mutants import ADMIN_KEY
from tests.helpers.mutants import gateway as _gateway

NOW = 1_800_000_000.0


def _headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


# --------------------------------------------------------------------------- upstream verdict


def test_cache_control_split_over_header_lines_is_read_whole() -> None:
    """Survivor: the header lines joined by something other than ``,`` (``max-age`` on the second
    line then lost, and the route's longer ttl used)."""
    verdict = upstream_verdict([_headers(("Cache-Control", "public"), ("Cache-Control", "max-age=5"))], NOW)
    assert verdict == UpstreamVerdict(True, 5.0)


@pytest.mark.parametrize("value", ["private", "no-store", "no-cache", "public, No-Store"])
def test_a_directive_forbidding_a_shared_copy_says_not_shareable(value: str) -> None:
    """Survivor: ``shareable = False`` → ``None`` (the verdict's contract is a bool)."""
    verdict = upstream_verdict([_headers(("Cache-Control", value))], NOW)
    assert verdict == UpstreamVerdict(False, None)
    assert verdict.shareable is False


@pytest.mark.parametrize("value", ["soon", "5X", '"X"', "", "-"])
def test_an_unreadable_max_age_means_already_expired(value: str) -> None:
    """Survivor: quotes stripped together with other characters (``5X`` read as 5 seconds)."""
    assert upstream_verdict([_headers(("Cache-Control", f"max-age={value}"))], NOW) == UpstreamVerdict(True, 0.0)


def test_the_strictest_freshness_wins_whatever_the_order() -> None:
    """Survivor: the last upstream response's freshness winning (``bound = limit`` always)."""
    strict_first = [_headers(("Cache-Control", "max-age=5")), _headers(("Cache-Control", "max-age=600"))]
    assert upstream_verdict(strict_first, NOW).max_fresh == 5.0
    assert upstream_verdict(list(reversed(strict_first)), NOW).max_fresh == 5.0
    silent = [_headers(("Cache-Control", "max-age=30")), _headers()]  # a response that says nothing
    assert upstream_verdict(silent, NOW).max_fresh == 30.0


def test_expires_without_a_date_is_measured_against_the_gateway_clock() -> None:
    """Survivor: ``base = now`` → ``None`` (an upstream that sends no ``Date``: aiohttp's test
    servers always add one, so only a direct call sees it)."""
    expires = email.utils.formatdate(NOW + 20, usegmt=True)
    assert upstream_verdict([_headers(("Expires", expires))], NOW) == UpstreamVerdict(True, 20.0)
    assert upstream_verdict([_headers(("Expires", expires))], NOW + 30) == UpstreamVerdict(True, 0.0)


# --------------------------------------------------------------------------- keys


def test_an_absent_vary_header_and_an_empty_one_share_an_entry_and_no_other() -> None:
    """Survivors: an absent ``vary`` header read as ``None`` or a placeholder text, so it stops
    sharing with an empty one and starts sharing with a client that sends that text."""
    config = load_config_text(
        """
upstreams:
  u: {base_url: "http://127.0.0.1:9"}
routes:
  r:
    stable: GET /v1/r
    upstream: u
    auth: none
    targets: ["GET /r"]
    cache: {ttl: 60s, vary: [Accept-Language]}
"""
    )
    route = config.routes[0]
    spec = route.cache
    assert spec is not None

    def key(*headers: tuple[str, str]) -> str:
        return policy.make_key(route, spec, "fp", "/v1/r", [], _headers(*headers), "c", "-").digest

    absent = key()
    assert key(("Accept-Language", "")) == absent
    for value in ("None", "XXXX", "en", "de"):
        assert key(("Accept-Language", value)) != absent, value
    assert key(("Accept-Language", "en")) != key(("Accept-Language", "de"))


def load_config_text(text: str) -> Config:
    """A Config from routes.yaml text (written to a temporary file: the loader reads a path)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "routes.yaml"
        path.write_text(text)
        return load_config(path)


# --------------------------------------------------------------------------- markers


def test_an_entry_is_marked_by_every_ancestor_its_path_and_its_route() -> None:
    """Survivors in ``_ancestors``: the root marker renamed, the first level skipped."""
    assert read_markers("r", "/v1/doc/x") == ("t:/", "t:/v1", "t:/v1/doc", "t:/v1/doc/x", "s:/v1/doc/x", "r:r")
    assert read_markers("r", "/") == ("t:/", "s:/", "r:r")


def test_paths_of_ordinary_length_are_remembered_and_long_ones_are_not() -> None:
    """Survivors in ``read_markers``: the memo used never, always (a caller filling memory with
    long paths), or not up to and including 256 characters."""
    remembered = policy._read_markers
    remembered.cache_clear()
    for length in (250, 256):
        path = "/" + "p" * (length - 1)
        assert read_markers("r", path) == ("t:/", f"t:{path}", f"s:{path}", "r:r")
    assert remembered.cache_info().currsize == 2
    long = "/" + "p" * 256  # 257 characters
    assert read_markers("r", long) == ("t:/", f"t:{long}", f"s:{long}", "r:r")
    assert remembered.cache_info().currsize == 2


def test_a_write_marks_its_subtree_and_its_collection() -> None:
    """Survivor: the collection of a top-level path (``/x`` sits in ``/``) renamed."""
    assert write_markers("PATCH", "/x") == ("t:/x", "s:/")
    assert write_markers("DELETE", "/v1/doc/x", ["other"]) == ("t:/v1/doc/x", "s:/v1/doc", "r:other")
    assert write_markers("POST", "/v1/doc") == ("s:/v1/doc",)


def test_purge_markers_name_exactly_what_is_purged() -> None:
    """Survivors in ``purge_markers``: a purge's markers drop the result of a fill still running
    while it happens (stored entries are deleted besides), so each must name route and/or subtree."""
    assert purge_markers("r", None) == ("r:r",)
    assert purge_markers(None, "/v1/doc/") == ("t:/v1/doc",)
    assert purge_markers("r", "/v1/doc") == ("r:r", "t:/v1/doc")
    assert purge_markers(None, None) == ("t:/",)  # everything: the root of every entry's markers
    assert set(purge_markers(None, None)) <= set(read_markers("any", "/v1/doc/x"))


# --------------------------------------------------------------------------- the route fingerprint, on reload


async def _reload(gw: Any, edit: Any) -> None:
    routes = Path(gw.server.app[GATEWAY].runtime.config.path)
    routes.write_text(edit(routes.read_text()))
    resp = await gw.post("/admin/reload", headers={"X-API-Key": ADMIN_KEY})
    assert resp.status == 200, await resp.text()


async def test_an_edit_elsewhere_in_routes_yaml_keeps_a_routes_entries(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors in ``fingerprint``: line numbers (the route's or a target's) or the description
    left in it, so a comment added above or a reworded description drops every cached answer."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    assert [(await gw.get("/v1/doc/a")).headers["X-Cache"] for _ in range(2)] == ["MISS", "HIT"]

    def shift_and_describe(text: str) -> str:
        text = "# a comment\n# moves every line down\n" + text
        return text.replace("  doc:\n", "  doc:\n    description: Documents, reworded.\n")

    await _reload(gw, shift_and_describe)
    server: Any = gw.server
    routes = {r.name: r for r in server.app[GATEWAY].runtime.config.routes}
    assert routes["doc"].description == "Documents, reworded."
    assert (await gw.get("/v1/doc/a")).headers["X-Cache"] == "HIT"
    assert origin.fetches("/doc/a") == 1


async def test_a_changed_target_is_never_answered_from_the_old_one(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor: the targets left out of the fingerprint (a target moved to another upstream path
    kept answering from entries filled by the old one)."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    assert [(await gw.get("/v1/doc/a")).headers["X-Cache"] for _ in range(2)] == ["MISS", "HIT"]
    await _reload(gw, lambda text: text.replace('targets: ["GET /doc/{name}"]', 'targets: ["GET /doc/{name}?v=2"]'))
    resp = await gw.get("/v1/doc/a")
    assert resp.headers["X-Cache"] == "MISS"
    assert origin.seen[-1] == ("/doc/a", "v=2")
