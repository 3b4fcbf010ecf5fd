"""Reading the stable API as a script does: one JSON answer, or a list walked by next_cursor."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient


async def get_json(gw: TestClient[Any, Any], url: str, status: int = 200) -> Any:
    resp = await gw.get(url)
    body = await resp.json()
    assert resp.status == status, body
    return body


async def walk(gw: TestClient[Any, Any], url: str, limit: int, most: int = 100) -> list[dict[str, Any]]:
    """Follow next_cursor to the end, as a script would (at most ``most`` requests)."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(most):
        sep = "&" if "?" in url else "?"
        page = await get_json(gw, f"{url}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("cursor never ended")
