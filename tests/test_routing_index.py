"""Routing cost that does not grow with the number of routes (issue 15, point 6).

The router is a segment tree: literal child first, then the parameter child, the method
last. These tests drive thousands of generated routes through real HTTP (what a script
sees: 200, 404 no_route, 405 with Allow, 400 bad_path_param, nothing forwarded), and
count the tree nodes a match visits: a count, unlike a time, cannot flake, and it is
what would grow again if matching went back to scanning the routes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import Config, parse_config
from gateway.errors import BadRequest, MethodNotAllowed, NotFound
from gateway.routing import Router
from tests.fake_upstream import start_fake

HEADER = """\
upstreams:
  fake:
    base_url: {url}
    timeouts: {{connect: 1s, read: 2s, total: 3s}}
routes:
"""

#: four routes per group: a static GET and POST, a one-parameter GET, a two-parameter DELETE
KINDS = (
    ("GET", "/v1/t{t}/items{g}", "/items{g}"),
    ("POST", "/v1/t{t}/items{g}", "/items{g}"),
    ("GET", "/v1/t{t}/items{g}/{{id}}", "/items{g}/{{id}}"),
    ("DELETE", "/v1/t{t}/items{g}/{{id}}/tags/{{tag}}", "/items{g}/{{id}}/tags/{{tag}}"),
)


def routes_yaml(n: int, url: str = "http://127.0.0.1:9") -> str:
    """``n`` routes of four shapes under 50 prefixes, as an operator with a big API would write them."""
    lines = [HEADER.format(url=url).rstrip("\n")]
    for i in range(n):
        group = i // len(KINDS)
        method, stable, target = KINDS[i % len(KINDS)]
        t = group % 50
        lines += [
            f"  r{i}:",
            f"    stable: {method} {stable.format(t=t, g=group)}",
            "    upstream: fake",
            f'    targets: ["{method} {target.format(g=group)}"]',
        ]
    return "\n".join(lines) + "\n"


def concrete(i: int) -> tuple[str, str, dict[str, str]]:
    """The method, a request path and the expected params for generated route ``r{i}``."""
    group = i // len(KINDS)
    method, stable, _ = KINDS[i % len(KINDS)]
    path = stable.format(t=group % 50, g=group).replace("{id}", f"id-{i}").replace("{tag}", f"tag-{i}")
    params = {k: f"{k}-{i}" for k in ("id", "tag") if "{" + k + "}" in stable.format(t=0, g=0)}
    return method, path, params


def expected_steps(i: int) -> int:
    """An all-literal path is one dict lookup; one with parameters adds the root and a node per segment."""
    _, path, params = concrete(i)
    return 1 if not params else 1 + path.count("/") + 1


@functools.cache
def parsed(n: int) -> Config:
    return parse_config(routes_yaml(n), "routes.yaml", {})


def test_every_one_of_2000_routes_matches_its_own_path_with_its_params() -> None:
    router = Router(parsed(2000).routes)
    for i, route in enumerate(parsed(2000).routes):
        method, path, params = concrete(i)
        m = router.match(method, path)
        assert (m.route.name, m.path_params) == (route.name, params), path
        assert router.match(method, path + "/?x=1").route.name == route.name  # trailing slash, query


def test_matching_visits_as_many_nodes_with_2000_routes_as_with_10() -> None:
    small, big = Router(parsed(10).routes), Router(parsed(2000).routes)
    for router, last in ((small, 9), (big, 1999)):
        method, path, _ = concrete(last)
        assert router.steps(method, path) == expected_steps(last)
    # the same request (a route both files declare) costs the same in both; an all-literal path is one lookup
    for i in range(10):
        method, path, _ = concrete(i)
        assert small.steps(method, path) == big.steps(method, path) == expected_steps(i), path
    # misses are bounded too: a 404 stops where the tree has no child, a 405 at the leaf
    assert big.steps("GET", "/v1/t7/nothing/here") == 1 + 3
    assert big.steps("PUT", concrete(1999)[1]) <= 1 + 7
    assert big.steps("GET", "/v1" + "/t1" * 10_000) <= 1 + 4  # the walk is never deeper than the tree


def test_backtracking_is_bounded_by_the_tree_not_the_routes() -> None:
    """Worst case: a literal and a parameter child at every level, and a miss at the end."""
    text = HEADER.format(url="http://127.0.0.1:9")
    for depth in range(1, 6):
        lit = "/".join(["a"] * depth)
        par = "/".join(f"{{p{k}}}" for k in range(depth))
        text += f"  lit{depth}:\n    stable: GET /{lit}/end\n    upstream: fake\n    targets: ['GET /x']\n"
        text += f"  par{depth}:\n    stable: GET /{par}/stop\n    upstream: fake\n    targets: ['GET /x']\n"
    for i in range(2000):  # unrelated routes do not add to it
        text += f"  other{i}:\n    stable: GET /other{i}/{{id}}\n    upstream: fake\n    targets: ['GET /x']\n"
    router = Router(parse_config(text, "routes.yaml", {}).routes)
    assert router.match("GET", "/a/a/a/stop").route.name == "par3"
    assert router.match("GET", "/a/a/a/end").route.name == "lit3"
    assert router.steps("GET", "/a/a/a/a/a/miss") <= 1 + 2 ** (5 + 1)


@pytest.fixture
async def big_gw(make_gateway: Any, aiohttp_server: Any) -> Any:
    fake, _, url = await start_fake(aiohttp_server)
    gw = await make_gateway(routes_yaml(2000, url), env={})
    return gw, fake


async def test_2000_routes_through_http(big_gw: Any) -> None:
    gw, fake = big_gw
    resp = await gw.delete("/v1/t49/items499/abc/tags/red")  # the route declared last
    assert resp.status == 200, await resp.text()
    assert fake.hits[-1].method == "DELETE" and fake.hits[-1].path == "/items499/abc/tags/red"
    resp = await gw.get("/v1/t0/items0")  # declared first
    assert resp.status == 200 and fake.hits[-1].path == "/items0"
    forwarded = len(fake.hits)

    resp = await gw.put("/v1/t49/items499")
    assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD, POST"
    assert (await resp.json())["error"]["code"]
    resp = await gw.get("/v1/t49/items499/abc/tags/red")
    assert resp.status == 405 and resp.headers["Allow"] == "DELETE"
    resp = await gw.get("/v1/t49/items500")  # group 500 would be t0: nothing there
    body = await resp.json()
    assert resp.status == 404 and body["error"]["code"] == "no_route"
    for raw in ("a%2Fb", "a%5Cb", "%00", "%7F"):  # (".." is resolved by the client: test_hostile)
        resp = await gw.get(f"/v1/t49/items499/{raw}")
        body = await resp.json()
        assert resp.status == 400 and body["error"]["code"] == "bad_path_param", raw
        assert body["error"]["route"] == "r1998"
    resp = await gw.get("/v1/t49/items499/%ff%fe")
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_path"
    assert len(fake.hits) == forwarded  # none of the refused requests reached the upstream


PRECEDENCE = """\
  by_param:
    stable: GET /v1/a/{x}/c
    upstream: fake
    targets: ["GET /param/{x}"]
  by_literal:
    stable: GET /v1/a/b/{y}
    upstream: fake
    targets: ["GET /literal/{y}"]
  post_literal:
    stable: POST /v1/a/lit/{y}
    upstream: fake
    targets: ["POST /post/{y}"]
"""


async def test_literal_segments_win_then_parameters_then_the_method(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    gw = await make_gateway(HEADER.format(url=url) + PRECEDENCE, env={})
    # both routes match /v1/a/b/c: the literal 'b' is tried before the parameter {x},
    # though by_param is declared first
    resp = await gw.get("/v1/a/b/c")
    assert resp.status == 200 and fake.hits[-1].path == "/literal/c"
    resp = await gw.get("/v1/a/z/c")
    assert resp.status == 200 and fake.hits[-1].path == "/param/z"
    # the literal branch has no GET: the walk backs out of it and the parameter branch answers
    resp = await gw.get("/v1/a/lit/c")
    assert resp.status == 200 and fake.hits[-1].path == "/param/lit"
    # no branch has DELETE: 405, and Allow names every method of every matching route
    resp = await gw.delete("/v1/a/lit/c")
    assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD, POST"
    resp = await gw.head("/v1/a/z/c")
    assert resp.status == 200 and fake.hits[-1].path == "/param/z"


def test_gateway_check_loads_a_3000_route_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(routes_yaml(3000))
    assert main(["check", "--config", str(path)]) == 0
    assert "OK (1 upstreams, 3000 routes" in capsys.readouterr().out
    # a shadowing pair at both ends of the file is still found (by one dict over the shapes, linear)
    path.write_text(
        routes_yaml(3000)
        + "  late_twin:\n    stable: GET /v1/t0/items0/{other}\n    upstream: fake\n    targets: ['GET /x']\n"
    )
    assert main(["check", "--config", str(path)]) != 0
    err = capsys.readouterr().err
    assert "routes.late_twin.stable" in err and "shadows route 'r2'" in err


def test_a_tie_goes_to_the_route_declared_first_when_the_router_is_built_directly() -> None:
    """config refuses a file with two routes of one method and shape; the Router alone keeps the first."""
    routes = parsed(10).routes
    router = Router(routes + routes[:1])
    assert router.match("GET", "/v1/t0/items0").route is routes[0]
    with pytest.raises(MethodNotAllowed):
        router.match("PATCH", "/v1/t0/items0")
    with pytest.raises(NotFound):
        router.match("GET", "/")
    with pytest.raises(BadRequest):
        router.match("GET", "/v1/t0/items0/..")
