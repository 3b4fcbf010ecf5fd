"""README.md stays true: its contents links land on headings, its file links exist, the
configuration reference names every key routes.yaml accepts, and the backup script's
documented options are the ones it has."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_every_anchor_link_lands_on_a_heading() -> None:
    anchors = {slug(h) for h in re.findall(r"^#{1,6} (.+)$", README, re.MULTILINE)}
    links = re.findall(r"\]\(#([^)]+)\)", README)
    assert links, "the contents line links to the sections"
    assert [a for a in links if a not in anchors] == []


def test_every_relative_file_link_exists() -> None:
    targets = [t for t in re.findall(r"\]\(([^)#:]+)\)", README) if not t.startswith("http")]
    assert targets
    assert [t for t in targets if not (ROOT / t).exists()] == []


def test_the_configuration_reference_names_every_key_routes_yaml_accepts() -> None:
    source = (ROOT / "gateway" / "config.py").read_text()
    keys: set[str] = set()
    for block in re.findall(r"\.keys\(\s*(\{[^}]*\})", source, re.DOTALL):
        keys |= set(re.findall(r'"([a-z_]+)"', block))
    assert {"base_url", "targets", "pagination", "stable"} <= keys
    start = README.index("## Configuration: routes.yaml")
    end = README.index("\n## ", start + 1)
    reference = README[start:end]
    missing = sorted(k for k in keys if not re.search(rf"(?<![\w-]){k}(?![\w-])", reference))
    assert missing == [], f"document these routes.yaml keys in README's configuration reference: {missing}"


def test_the_backup_options_table_matches_the_script() -> None:
    script = ROOT / "examples" / "backup_notebooks.py"
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True).stdout
    options = set(re.findall(r"(--[a-z][a-z-]+)", out)) - {"--help"}
    start = README.index("## Backing up every notebook")
    documented = set(re.findall(r"^\| `(--[a-z-]+)", README[start:], re.MULTILINE))
    assert documented == options
