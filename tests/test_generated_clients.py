"""What clients generated from /openapi.json send is understood: list params repeated or comma-separated."""

from __future__ import annotations

from typing import Any


async def test_a_list_param_may_be_repeated_as_generated_clients_send_it(gw: Any) -> None:
    joined = await gw.get("/v1/observable/notebooks?type=public,shared&all=true")
    repeated = await gw.get("/v1/observable/notebooks?type=public&type=shared&all=true")
    assert joined.status == repeated.status == 200
    a, b = await joined.json(), await repeated.json()
    assert a == b and {i["type"] for i in a["items"]} == {"public", "shared"}
    # a scalar param given twice is still ambiguous, and still refused
    twice = await gw.get("/v1/observable/notebooks?limit=1&limit=2")
    assert twice.status == 400 and "given more than once" in (await twice.json())["error"]["message"]
