"""README.md and the docs/ site stay true: the site builds with ``mkdocs build --strict`` (a broken
link or anchor fails), the README's links land, the configuration reference is generated
from the config models, the command-line page is the commands' own --help, and the backup script's
documented options are the ones it has."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from gateway import clidoc
from gateway.config import refdoc
from gateway.config.pagination_keys import STYLE_KEYS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"


def test_the_readme_stays_a_first_screen() -> None:
    assert len(README.encode()) <= 8 * 1024 + 512, "the reference belongs in docs/, the README is the first screen"
    for command in ("make demo", "make test"):
        assert command in README


def test_every_relative_link_of_the_readme_exists() -> None:
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)]+)\)", README) if not t.startswith("http")]
    assert targets
    assert [t for t in targets if t and not (ROOT / t).exists()] == []


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    out = subprocess.run(
        [str(mkdocs), "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").exists()


def test_every_docs_page_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert [p for p in pages if p not in nav] == []


def test_the_configuration_reference_is_generated_from_the_models() -> None:
    page = (DOCS / "configuration.md").read_text()
    assert refdoc.MARKER in page, "docs/configuration.md lost its generated reference"
    assert page.split(refdoc.MARKER)[0].strip().startswith("# Configuration: routes.yaml")  # the worked example
    assert refdoc.MARKER + page.split(refdoc.MARKER)[1] == refdoc.render(), (
        "docs/configuration.md is stale: run `python -m gateway.config.refdoc docs/configuration.md`"
    )
    for key in ("base_url", "targets", "pagination", "stable", "circuit_breaker", "fan_out"):
        assert f"| `{key}` |" in page


def test_the_pagination_page_describes_every_style_and_its_keys() -> None:
    styles = (DOCS / "pagination.md").read_text()
    for style, style_keys in STYLE_KEYS.items():
        assert f"`{style}`" in styles, f"docs/pagination.md does not describe style {style}"
        missing = sorted(k for k in style_keys if f"`{k}`" not in styles and f"{k}:" not in styles)
        assert missing == [], f"document these keys of pagination style {style} in docs/pagination.md: {missing}"


def test_the_command_line_page_is_generated_from_the_help() -> None:
    page = (DOCS / "cli.md").read_text()
    assert page == clidoc.render(), "docs/cli.md is stale: run `python -m gateway.clidoc > docs/cli.md`"


def test_the_backup_options_table_matches_the_script() -> None:
    script = ROOT / "examples" / "backup_notebooks.py"
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True).stdout
    options = set(re.findall(r"(--[a-z][a-z-]+)", out)) - {"--help"}
    documented = set(re.findall(r"^\| `(--[a-z-]+)", (DOCS / "backup.md").read_text(), re.MULTILINE))
    assert documented == options


def test_every_error_code_the_gateway_answers_is_documented() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "gateway").rglob("*.py") if "sandbox" not in p.parts)
    codes = set(re.findall(r"\b(?:default_)?code\s*=\s*\"([a-z_]+)\"", source))
    codes |= set(re.findall(r'"code":\s*"([a-z_]+)"', source))
    assert {"bad_cursor", "upstream_route_gone", "host_not_allowed"} <= codes
    documented = set(re.findall(r"`([a-z_]+)`", (DOCS / "errors.md").read_text()))
    assert sorted(codes - documented) == [], "document these error codes in docs/errors.md"


def _answered_statuses() -> dict[str, set[int]]:
    """code → the statuses the gateway answers it with, read from its source: each ``SomeError(..., code="x")``
    by the class's ``status`` (followed through its bases), each class's ``default_code``, and the upstream
    4xx a write passes on (``client_error_for(status)(..., code="x")``: the statuses it maps)."""
    import ast

    classes: dict[str, tuple[list[str], int | None, str | None]] = {}
    calls: list[tuple[str, str]] = []
    for path in (ROOT / "gateway").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                status = code = None
                for stmt in node.body:
                    if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant):
                        for t in stmt.targets:
                            if isinstance(t, ast.Name) and t.id == "status":
                                status = stmt.value.value
                            if isinstance(t, ast.Name) and t.id == "default_code":
                                code = stmt.value.value
                bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
                classes[node.name] = (bases, status, code)
            elif isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "code" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                        func = node.func
                        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                        if isinstance(func, ast.Call) and getattr(func.func, "id", "") == "client_error_for":
                            name = "client_error_for"
                        calls.append((name, kw.value.value))

    def status_of(name: str) -> int | None:
        if name not in classes:
            return None
        bases, status, _ = classes[name]
        if status is not None:
            return status
        return next((s for b in bases if (s := status_of(b)) is not None), None)

    from gateway.errors import _BY_STATUS

    out: dict[str, set[int]] = {}
    for name, (_, _, code) in classes.items():
        if code is not None and (status := status_of(name)) is not None:
            out.setdefault(code, set()).add(status)
    for name, code in calls:
        if name == "client_error_for":
            out.setdefault(code, set()).update({400, 409, 422} & set(_BY_STATUS))
        elif (status := status_of(name)) is not None:
            out.setdefault(code, set()).add(status)
    return out


def test_every_error_code_is_documented_under_the_status_it_is_answered_with() -> None:
    documented: dict[str, set[int]] = {}
    for status, codes in re.findall(r"^\| (\d{3}) \| ([^|]+) \|", (DOCS / "errors.md").read_text(), re.MULTILINE):
        for code in re.findall(r"`([a-z_]+)`", codes):
            documented.setdefault(code, set()).add(int(status))
    answered = _answered_statuses()
    assert answered["cache_disabled"] == {409} and answered["unknown_route"] == {400}  # the reader reads
    assert {400, 409, 422, 502} <= answered["upstream_rejected"]
    wrong = {
        code: (sorted(statuses), sorted(documented.get(code, set())))
        for code, statuses in answered.items()
        if code in documented and documented[code] != statuses
    }
    assert wrong == {}, "code: (answered, documented) — fix docs/errors.md"


def test_the_header_limits_in_errors_md_are_the_gateways() -> None:
    from gateway.server import MAX_HEADER_BYTES, MAX_HEADERS

    row = next(line for line in (DOCS / "errors.md").read_text().splitlines() if line.startswith("| 431 |"))
    assert f"{MAX_HEADER_BYTES // 1024} KiB" in row and f"{MAX_HEADERS} headers" in row, row
