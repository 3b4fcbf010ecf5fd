"""``python -m bench.routing``: what ``Router.match`` costs with 10 routes and with 2,000.

A micro-benchmark, no server: the same generated routes file (four route shapes under
50 prefixes, as a big API would have) is cut to 10 and to 2,000 routes, and each
router matches the same kinds of request: the route declared first, the one declared
last, a 404 and a 405. The best of several rounds is printed (a shared VM's CPU drifts;
the minimum is the least disturbed), with the tree nodes each match visits, which is
what the cost follows. docs/performance.md has the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import timeit

from gateway.config import parse_config
from gateway.errors import ClientError
from gateway.routing import Router

#: four routes per group: a static GET and POST, a one-parameter GET, a two-parameter DELETE
KINDS = (
    ("GET", "/v1/t{t}/items{g}", "/items{g}"),
    ("POST", "/v1/t{t}/items{g}", "/items{g}"),
    ("GET", "/v1/t{t}/items{g}/{{id}}", "/items{g}/{{id}}"),
    ("DELETE", "/v1/t{t}/items{g}/{{id}}/tags/{{tag}}", "/items{g}/{{id}}/tags/{{tag}}"),
)


#: the route declared last in every file, so that the same request is timed against each size
LAST = "/v1/zz/last/{id}"


def routes_yaml(n: int) -> str:
    """A valid routes.yaml with ``n`` routes on one upstream, the last one ``LAST`` whatever ``n``."""
    lines = ["upstreams:", "  api:", "    base_url: http://127.0.0.1:9", "routes:"]
    for i in range(n - 1):
        group = i // len(KINDS)
        method, stable, target = KINDS[i % len(KINDS)]
        lines += [
            f"  r{i}:",
            f"    stable: {method} {stable.format(t=group % 50, g=group)}",
            "    upstream: api",
            f'    targets: ["{method} {target.format(g=group)}"]',
        ]
    lines += ["  last:", f"    stable: GET {LAST}", "    upstream: api", '    targets: ["GET /last/{id}"]']
    return "\n".join(lines) + "\n"


def request_for(i: int) -> tuple[str, str]:
    """A request that generated route ``r{i}`` answers."""
    group = i // len(KINDS)
    method, stable, _ = KINDS[i % len(KINDS)]
    return method, stable.format(t=group % 50, g=group).replace("{id}", "abc").replace("{tag}", "red")


def cost(router: Router, method: str, path: str, number: int, rounds: int) -> float:
    """Best-of-``rounds`` ns per match; a 404/405 is raised and caught, as the server does."""

    def once() -> None:
        with contextlib.suppress(ClientError):
            router.match(method, path)

    return min(timeit.repeat(once, number=number, repeat=rounds)) / number * 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.routing", description=__doc__)
    p.add_argument("--sizes", default="10,2000", help="route counts to compare (default 10,2000)")
    p.add_argument("--number", type=int, default=20_000, help="matches per round")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    routers = {n: Router(parse_config(routes_yaml(n), "routes.yaml", {}).routes) for n in sizes}
    print(f"Router.match, ns per call (best of {args.rounds} x {args.number}); nodes visited in brackets")
    print(f"  {'request':36s}" + "".join(f"{f'{n} routes':>18s}" for n in sizes))
    cases = [
        ("the route declared last (1 param)", "GET", LAST.replace("{id}", "abc")),
        ("the route declared first (static)", *request_for(0)),
        ("404 no_route", "GET", "/v1/t7/nothing/here"),
        ("405 (PUT on a GET/POST path)", "PUT", request_for(0)[1]),
    ]
    for label, method, path in cases:
        cells = []
        for n in sizes:
            r = routers[n]
            cells.append(f"{cost(r, method, path, args.number, args.rounds):9.0f} [{r.steps(method, path)}]")
        print(f"  {label:36s}" + "".join(f"{c:>18s}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
