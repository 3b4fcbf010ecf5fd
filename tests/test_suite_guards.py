"""Guards on the test suite itself: a hung test fails instead of hanging the run, and test modules
stay independent (shared code lives in tests/helpers/), so xdist can spread them over workers."""

from __future__ import annotations

import re
import time
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

HUNG = """
import asyncio
import time


async def test_a_paging_loop_that_never_ends() -> None:
    cursor = "c1"
    while cursor:  # an upstream that always answers with a next cursor
        await asyncio.sleep(0.01)


def test_blocked_in_a_sync_call() -> None:
    time.sleep(600)


def test_the_run_goes_on_after_them() -> None:
    assert True
"""


def test_the_suite_has_a_per_test_timeout() -> None:
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < int(ini["timeout"]) <= 300
    assert ini.get("timeout_method", "signal") == "signal"  # "thread" would end the whole run at the first hang


def test_a_hung_test_fails_and_the_run_goes_on(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\nasyncio_mode = "auto"\ntimeout = 1\n')
    pytester.makepyfile(test_hung=HUNG)
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(["*Timeout*"])
    assert time.monotonic() - started < 45


def test_no_test_module_imports_another() -> None:
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*(from tests\.test_\w+ import|import tests\.test_)", line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "move shared code to tests/helpers/:\n" + "\n".join(offenders)


def test_helpers_hold_no_tests() -> None:
    """pytest collects only test_*.py; a test written in a helper module would silently never run."""
    for path in Path(ROOT / "tests" / "helpers").glob("*.py"):
        assert not re.search(r"^(async )?def test_", path.read_text(), re.MULTILINE), path
