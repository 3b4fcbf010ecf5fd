"""What clients generated from /openapi.json send is understood: list params repeated or comma-separated."""

from __future__ import annotations

import importlib
from types import ModuleType
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


async def test_a_team_script_on_the_generated_client_lists_reads_and_updates(gw: Any, generated: ModuleType) -> None:
    notebooks = importlib.import_module("rg_client.api.posthog.posthog_notebooks")
    read = importlib.import_module("rg_client.api.posthog.posthog_notebook")
    update = importlib.import_module("rg_client.api.posthog.posthog_notebook_update")
    body_model = importlib.import_module("rg_client.models.posthog_notebook_update_body").PosthogNotebookUpdateBody
    observable = importlib.import_module("rg_client.api.observable.observable_notebooks")
    type_item = importlib.import_module("rg_client.models.observable_notebooks_type_item").ObservableNotebooksTypeItem
    async with generated.Client(base_url=str(gw.make_url("")).rstrip("/")) as client:
        # list every notebook, 5 per page, following next_cursor
        seen: list[str] = []
        cursor: Any = generated.types.UNSET
        while True:
            page = await notebooks.asyncio("1", client=client, limit=5, cursor=cursor)
            assert page is not None and hasattr(page, "items"), page
            seen += [item.id for item in page.items]
            if not page.next_cursor:
                break
            cursor = page.next_cursor
        everything = await (await gw.get("/v1/posthog/projects/1/notebooks?all=true")).json()
        assert seen == [i["id"] for i in everything["items"]] and len(seen) > 5
        # read one, then update its title
        one = await read.asyncio("1", seen[0], client=client)
        assert one is not None and one.id == seen[0]
        changed = await update.asyncio("1", seen[0], client=client, body=body_model.from_dict({"title": "renamed"}))
        assert changed is not None and changed.title == "renamed", changed
        # a list parameter, sent as the generator sends it (type=public&type=shared)
        both = await observable.asyncio(client=client, type_=[type_item("public"), type_item("shared")], all_=True)
        assert both is not None and {item.type_ for item in both.items} == {"public", "shared"}
