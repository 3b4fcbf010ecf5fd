"""examples/backup_notebooks.py, run as a user runs it: a subprocess against a gateway on a real
socket, wired to the sandboxes by the shipped routes.yaml (plus client and admin keys)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from gateway.server import GATEWAY
from tests.helpers.backup import ADMIN_KEY, TYPES, Stack

OLD_TARGET = "      - GET /user/documents?types={type}\n"


async def wait_for(cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def assert_backed_up(stack: Stack, types: tuple[str, ...] = TYPES, project: int | None = 1) -> dict[str, Any]:
    """Every expected notebook has its file with the real content, and an index entry."""
    index = stack.index()
    notebooks = index["notebooks"]
    for nb_id, nb in stack.observable_expected(types).items():
        doc = json.loads((stack.out / "observable" / f"{nb_id}.json").read_text())
        upstream = stack.obs.document_json(nb)  # the gateway names update_time updated_at, as the lists do
        assert doc == {**{k: v for k, v in upstream.items() if k != "update_time"}, "updated_at": nb.update_time}
        entry = notebooks[f"observable/{nb_id}"]
        assert entry["version"] == nb.version and entry["updated_at"] == nb.update_time and entry["type"] == nb.type
        assert entry["file"] == f"observable/{nb_id}.json"
    observable_keys = {k for k in notebooks if k.startswith("observable/")}
    assert observable_keys == {f"observable/{i}" for i in stack.observable_expected(types)}
    if project is not None:
        visible = stack.ph.visible(project)
        for nb in visible:
            doc = json.loads((stack.out / "posthog" / str(project) / f"{nb.short_id}.json").read_text())
            assert doc["id"] == nb.short_id and doc["title"] == nb.title
            assert doc["content"] == nb.content and doc["version"] == nb.version
            entry = notebooks[f"posthog/{project}/{nb.short_id}"]
            assert entry["version"] == nb.version and entry["project"] == str(project)
        assert {k for k in notebooks if k.startswith("posthog/")} == {
            f"posthog/{project}/{nb.short_id}" for nb in visible
        }
    return index


async def test_full_run_then_nothing_then_only_what_changed(stack: Stack) -> None:
    total = len(stack.observable_expected()) + len(stack.ph.visible(1))
    run = await stack.backup("--posthog-project", "1")
    assert run.code == 0, run.stderr
    assert f"backup complete: {total} notebooks" in run.stdout
    assert "fetched" in run.stderr  # the progress lines
    index = assert_backed_up(stack)
    assert index["complete"] is True and index["failures"] == {}
    trash = stack.obs.by_kind("trash")[0]
    assert not (stack.out / "observable" / f"{trash.id}.json").exists()

    # second run: listings only, every notebook is unchanged; the project comes from the env
    stack.obs.reset_counters()
    stack.ph.reset_counters()
    run = await stack.backup(env={"POSTHOG_PROJECT_ID": "1"})
    assert run.code == 0, run.stderr
    assert stack.document_fetches() == 0 and stack.posthog_fetches() == 0
    assert stack.obs.count("GET", "/user/documents") > 0

    # one Observable notebook edited, one PostHog notebook edited, one created
    nb = stack.obs.by_kind("shared")[3]
    nb.nodes.append({"id": nb.version + 1, "value": "x = 1", "pinned": False, "mode": "js", "data": None, "name": None})
    nb.version += 2
    nb.update_ms += 1
    edited = stack.ph.visible(1)[7]
    stack.ph.update(edited, {"title": "Renamed during the test"})
    created = stack.ph.create(1, "Brand new", {"type": "doc", "content": []})
    stack.obs.reset_counters()
    stack.ph.reset_counters()
    run = await stack.backup("--posthog-project", "1")
    assert run.code == 0, run.stderr
    assert stack.obs.count("GET", f"/document/{nb.id}") == 1 and stack.document_fetches() == 1
    assert stack.ph.count("GET", f"/api/projects/1/notebooks/{edited.short_id}/") == 1
    assert stack.ph.count("GET", f"/api/projects/1/notebooks/{created.short_id}/") == 1
    assert stack.posthog_fetches() == 2
    assert_backed_up(stack)


async def test_a_failing_notebook_gives_exit_1_and_the_next_run_fetches_only_it(stack: Stack) -> None:
    broken = stack.ph.visible(1)[4]
    path = f"/api/projects/1/notebooks/{broken.short_id}/"
    stack.ph.apply_switches({"faults": {path: {"status": 500}}})
    run = await stack.backup("--posthog-project", "1", "--retries", "1")
    assert run.code == 1, run.stderr
    key = f"posthog/1/{broken.short_id}"
    assert "backup INCOMPLETE: 1 notebook(s) failed" in run.stdout and key in run.stdout
    assert stack.ph.count("GET", path) == 2  # tried, then retried once
    assert "retry 1/1" in run.stderr and "502" in run.stderr
    index = stack.index()
    assert index["complete"] is False
    assert "upstream_failed" in index["failures"][key]["error"]
    assert key not in index["notebooks"]
    assert not (stack.out / "posthog" / "1" / f"{broken.short_id}.json").exists()
    assert len(index["notebooks"]) == len(stack.observable_expected()) + len(stack.ph.visible(1)) - 1

    stack.ph.reset()
    stack.obs.reset_counters()
    run = await stack.backup("--posthog-project", "1")
    assert run.code == 0, run.stderr
    assert stack.posthog_fetches() == 1 and stack.ph.count("GET", path) == 1
    assert stack.document_fetches() == 0
    index = assert_backed_up(stack)
    assert index["failures"] == {} and index["complete"] is True


async def test_an_interrupted_run_resumes_where_it_stopped(stack: Stack) -> None:
    total = len(stack.observable_expected()) + len(stack.ph.visible(1))
    stack.obs.apply_switches({"latency_ms": 30})
    stack.ph.apply_switches({"latency_ms": 30})

    def indexed() -> int:
        try:
            return len(stack.index()["notebooks"])
        except (OSError, ValueError):
            return 0

    # Ctrl-C: the run stops cleanly, says how to resume, and records what it saved
    proc = await stack.start("--posthog-project", "1")
    await wait_for(lambda: indexed() >= 5, "a few notebooks saved")
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130, err.decode()
    assert "run the same command again to resume" in err.decode()
    assert stack.index()["complete"] is False

    # kill -9 in the middle: no half-written file is ever visible, the index is still valid JSON
    proc = await stack.start("--posthog-project", "1")
    before = indexed()
    await wait_for(lambda: indexed() >= before + 10, "more notebooks saved")
    proc.kill()
    await proc.wait()
    index = stack.index()
    saved = len(index["notebooks"])
    assert 0 < saved < total
    for entry in index["notebooks"].values():
        json.loads((stack.out / entry["file"]).read_text())

    stack.obs.reset_counters()
    stack.ph.reset_counters()
    stack.obs.apply_switches({"latency_ms": 0})
    stack.ph.apply_switches({"latency_ms": 0})
    run = await stack.backup("--posthog-project", "1")
    assert run.code == 0, run.stderr
    # exactly what the index did not have yet is fetched: nothing twice, nothing missed
    assert stack.document_fetches() + stack.posthog_fetches() == total - saved
    assert_backed_up(stack)
    assert not list(stack.out.rglob("*.tmp"))


async def test_upstream_route_changes_mid_run_and_a_reload_rescues_it(stack: Stack) -> None:
    """Observable drops /user/documents while the backup runs; the operator adds the old
    per-kind route as a fallback target and reloads; the same run completes."""
    stack.obs.apply_switches({"latency_ms": 300})
    listed_before = stack.obs.count("GET", "/user/documents")
    proc = await stack.start("--observable-types", "public", "--posthog-project", "1")
    # the run's first listing request has arrived and waits out its latency (the listing is read
    # before any download, so the route breaks while it is being read)
    await wait_for(lambda: stack.obs.count("GET", "/user/documents") > listed_before, "the run to be under way")
    listed_before = stack.obs.count("GET", "/user/documents")
    stack.obs.apply_switches({"faults": {"/user/documents": {"status": 404}}, "legacy_routes": True, "latency_ms": 5})
    # the backup gets 502 upstream_route_gone for that page, and keeps retrying it
    await wait_for(lambda: stack.obs.count("GET", "/user/documents") >= listed_before + 2, "the retries")
    assert proc.returncode is None

    text = stack.routes.read_text()
    assert text.count(OLD_TARGET) == 1
    stack.routes.write_text(text.replace(OLD_TARGET, OLD_TARGET + "      - GET /user/{type}\n"))
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.url}/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as resp,
    ):
        assert resp.status == 200, await resp.text()
    route = next(r for r in stack.app[GATEWAY].runtime.config.routes if r.name == "observable_notebooks")
    assert len(route.targets) == 2

    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert "upstream_route_gone" in err.decode() and "retry 2/" in err.decode()
    assert stack.obs.count("GET", "/user/public") >= 1  # the listing came from the fallback
    assert_backed_up(stack, types=("public",))


async def test_a_refused_key_stops_at_once_and_bad_usage_is_exit_2(stack: Stack) -> None:
    run = await stack.backup("--posthog-project", "1", key="not-the-key")
    assert run.code == 1
    assert "invalid_api_key" in run.stderr and "--api-key" in run.stderr
    assert stack.obs.total_requests == 0 and stack.ph.total_requests == 0
    assert not (stack.out / "observable").exists() and not (stack.out / "posthog").exists()
    run = await stack.backup("--observable-types", "public,drafts")
    assert run.code == 2 and "drafts" in run.stderr
    run = await stack.backup("--posthog-project", "one")
    assert run.code == 2 and "numeric" in run.stderr
