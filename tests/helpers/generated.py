"""A client generated from the shipped routes' /openapi.json, as a team would make one (a fixture)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from gateway.config import load_config
from gateway.openapi import build
from tests.conftest import ROUTES


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """A client generated from the shipped routes' /openapi.json by openapi-python-client, as a team would."""
    generator = Path(sys.executable).with_name("openapi-python-client")
    out = tmp_path_factory.mktemp("client")
    spec = out / "openapi.json"
    spec.write_text(json.dumps(build(load_config(ROUTES, env={}))))
    run = subprocess.run(
        [str(generator), "generate", "--path", str(spec), "--meta", "none", "--output-path", str(out / "rg_client")],
        capture_output=True,
        text=True,
        cwd=out,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("rg_client")
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == "rg_client" or m.startswith("rg_client.")]:
            del sys.modules[name]
