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
