"""The package layout: no import cycles, the sandbox outside the shipped package, one home per concept."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.fake_upstream import Reply, start_fake
from tests.helpers.resilience import _gateway, _yaml

#: a Python that behaves as an install of the gateway alone: ``import sandbox`` fails as it does there
WITHOUT_SANDBOX = (
    "import sys; sys.modules['sandbox'] = None; from gateway.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize("command", ["sandbox", "demo"])
def test_sandbox_and_demo_say_clearly_when_the_sandbox_is_not_installed(command: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_SANDBOX, command, "--observable-port", "0", "--posthog-port", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert out.stderr.startswith(f"gateway {command}: the sandbox upstreams are not installed"), out.stderr
    assert "pip install -e ." in out.stderr


def test_the_sandbox_is_its_own_top_level_package() -> None:
    assert not (ROOT / "gateway" / "sandbox").exists()
    assert (ROOT / "sandbox" / "__init__.py").exists()
    # only the development commands use it: the demo, and `gateway sandbox` (gateway.cli.commands, lazily)
    users = {mod for mod, name in _imports(ROOT / "gateway") if name.split(".")[0] == "sandbox"}
    assert users == {"gateway.demo", "gateway.cli.commands"}, users


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(package: Path) -> list[tuple[str, str]]:
    """(importing module, imported module) for every import statement under ``package``.

    Imports inside functions and ``if TYPE_CHECKING:`` count too: a cycle through a lazy import is
    still a cycle of design, only hidden from the interpreter.
    """
    pairs: list[tuple[str, str]] = []
    for path in sorted(package.rglob("*.py")):
        mod = _module_name(path)
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                pairs += [(mod, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                pairs.append((mod, target))
                # `from gateway import jsonio` imports the module gateway.jsonio
                pairs += [(mod, f"{target}.{alias.name}") for alias in node.names]
    return pairs


def _graph(packages: list[str]) -> dict[str, set[str]]:
    modules = {_module_name(p) for name in packages for p in (ROOT / name).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name in packages:
        for src, dst in _imports(ROOT / name):
            # importing gateway.pagination.cursor runs gateway/pagination/__init__.py first: an edge to
            # each enclosing package too, but not from a module inside it (its own package's face)
            parts = dst.split(".")
            for target in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
                if target in modules and target != src and not src.startswith(target + "."):
                    graph[src].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_gateway_or_the_sandbox() -> None:
    """Counting every import, lazy ones in functions too: a lazy import is a cycle hidden, not gone."""
    graph = _graph(["gateway", "sandbox"])
    assert "gateway.server" in graph and "gateway.upstream" in graph
    assert _cycles(graph) == []


def test_every_module_imports() -> None:
    """Every module of both packages imports (in a fresh interpreter, so no test has imported them first)."""
    modules = sorted(m for m in _graph(["gateway", "sandbox"]) if not m.endswith("__main__"))
    script = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    out = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]


async def test_one_reading_of_retry_after_for_retries_and_for_the_client(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """A date or PostHog's fractional detail reach the client of a 429 as whole seconds, read once."""
    fake, _, url = await start_fake(aiohttp_server)
    gw, _ = await _gateway(make_gateway, _yaml(url))
    in_two_minutes = formatdate(time.time() + 120, usegmt=True)
    fake.script("/things/dated", Reply(429, headers={"Retry-After": in_two_minutes}))
    resp = await gw.get("/v1/things/dated")
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "upstream_rate_limited"
    assert 115 <= int(resp.headers["Retry-After"]) <= 121, "a date is relayed as seconds: clocks differ"
    assert fake.count("/things/dated") == 1  # beyond max_wait (3s): not waited out, as the header says
    detail = b'{"detail": "Request was throttled. Expected available in 99.5 seconds."}'
    fake.script("/things/detail", Reply(429, detail, {"Content-Type": "application/json"}))
    # another credential: the first is held off for the two minutes its 429 asked for
    gw, _ = await _gateway(make_gateway, _yaml(url), env={"FAKE_KEY": "another-fake-key"})
    resp = await gw.get("/v1/things/detail")
    assert resp.status == 503 and resp.headers["Retry-After"] == "100"
    assert fake.count("/things/detail") == 1  # the same 99.5s kept resilience from retrying
