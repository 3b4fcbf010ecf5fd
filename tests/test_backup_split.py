"""examples/backup_notebooks.py is a thin entry point over examples/notebook_backup/: it must keep working
wherever the ``examples/`` folder is copied, however Python is told to run it, and its modules stay small."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.backup import ROOT, SCRIPT

PACKAGE = ROOT / "examples" / "notebook_backup"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_a_copied_examples_folder_runs_without_the_checkout(tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "examples"
    shutil.copytree(ROOT / "examples", copy, ignore=shutil.ignore_patterns("__pycache__"))
    expected = _run(str(SCRIPT), "--help", cwd=ROOT)
    assert expected.returncode == 0, expected.stderr
    # -I: no script folder, no PYTHONPATH on sys.path (as a loader by file name): the script finds its package
    for flags in ([], ["-I"]):
        helped = _run(*flags, str(copy / "backup_notebooks.py"), "--help", cwd=tmp_path)
        assert helped.returncode == 0, helped.stderr
        assert helped.stdout == expected.stdout
        bad = _run(*flags, str(copy / "backup_notebooks.py"), "--gateway", "ftp://x", "--out", "o", cwd=tmp_path)
        assert bad.returncode == 2 and bad.stdout == ""
        assert bad.stderr.startswith("backup_notebooks.py: error: --gateway must be an http:// or https:// URL")
        assert "Traceback" not in bad.stderr


def test_every_module_of_the_backup_package_stays_small() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert {"cli.py", "client.py", "job.py", "store.py", "sources.py"} <= set(sizes)
    assert {name: n for name, n in sizes.items() if n > 300} == {}
    assert len(SCRIPT.read_text().splitlines()) < 80  # the entry point only: the code lives in the package
