"""promtool, as the alert tests run it: on the shipped rules, or on unit tests written for them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, need_binary

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


async def promtool(*args: str, cwd: Path = ROOT) -> tuple[int, str]:
    """promtool's exit code and output (stdout and stderr together)."""
    proc = await asyncio.create_subprocess_exec(
        need_binary("promtool"), *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def promtool_test(tmp_path: Path, tests: list[dict[str, Any]], rules: Path = ALERTS) -> tuple[int, str]:
    """``promtool test rules`` on ``tests`` against ``rules`` (the shipped alerts.yml)."""
    doc = {"rule_files": [str(rules)], "evaluation_interval": "15s", "tests": tests}
    path = tmp_path / "promtool_test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return await promtool("test", "rules", str(path))
