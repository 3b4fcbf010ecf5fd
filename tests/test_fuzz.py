"""Fuzz the running gateway with schemathesis against its own ``/openapi.json``.

The gateway (shipped routes.yaml) and both sandboxes serve on real sockets in the test's
event loop; schemathesis runs in a worker thread, loads the document over HTTP, and
sends positive and negative cases for every operation.  Each answer must conform to
the document (status, content type, headers, body schema) and never be a 500: a 500
is the gateway's own fault.  502/503/504 are documented upstream faults, not failures
here (the fuzzer does make the sandboxes refuse things, e.g. unknown project ids).
Bounded: a fixed number of examples per operation and mode, derandomized.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import requests
import schemathesis
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sandbox.runner import Sandboxes

EXAMPLES = 20


@schemathesis.check
def no_internal_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 500 means the gateway itself broke; every other failure has its own documented status."""
    if response.status_code == 500:
        raise AssertionError(f"500 from the gateway: {response.text[:300]}")
    return None


CHECKS = [
    no_internal_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _fuzz(base_url: str) -> tuple[list[str], Counter[int], int]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = 0
    with requests.Session() as session:
        for result in schema.get_all_operations():
            op = result.ok()  # type: ignore[union-attr]
            operations += 1
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=op.as_strategy(mode))
                def run(case: Any) -> None:
                    resp = case.call(base_url=base_url, session=session, timeout=15)
                    statuses[resp.status_code] += 1
                    case.validate_response(resp, checks=CHECKS)

                try:
                    run()
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE, op.label  # no input to get wrong (e.g. /healthz)
                except Exception as exc:  # one failure per operation and mode, all reported together
                    failures.append(f"{op.label} ({mode.value}): {exc}")
    return failures, statuses, operations


async def test_fuzzed_requests_never_break_the_gateway_or_its_schema(
    gw: TestClient[Any, Any], sandboxes: Sandboxes
) -> None:
    base_url = str(gw.make_url("")).rstrip("/")
    failures, statuses, operations = await asyncio.to_thread(_fuzz, base_url)
    assert operations >= 12 + 4, operations  # every stable route and the gateway's own endpoints
    assert not failures, "\n\n".join(failures)
    assert sum(statuses.values()) >= operations * EXAMPLES  # it really sent them
    assert any(200 <= s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses), statuses
    assert statuses[500] == 0
    # still healthy after the storm
    assert (await gw.get("/healthz")).status == 200
    assert (await gw.get("/v1/observable/notebooks?limit=1")).status == 200
