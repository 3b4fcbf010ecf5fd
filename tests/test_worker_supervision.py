"""``gateway serve --workers 2``: a hung worker (SIGSTOP) is found by its missing heartbeats and replaced."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp

from sandbox.runner import Sandboxes
from tests.conftest import ROUTES
from tests.helpers.workers import _children, _pids
from tests.processes import run_cli, serve

TIMEOUT = 2.0


async def _answered_by(base: str) -> int | None:
    """The pid of the worker that answered one request on a new connection (None: no answer)."""
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s,
            s.get(base + "/readyz", timeout=aiohttp.ClientTimeout(total=TIMEOUT + 5)) as r,
        ):
            return int((await r.json())["pid"]) if r.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def test_a_stopped_worker_is_killed_and_replaced_while_the_other_answers(
    sandboxes: Sandboxes, sandbox_env: dict[str, str]
) -> None:
    args = ("--workers", "2", "--worker-timeout", f"{TIMEOUT:g}", "--no-probes", "--watch-interval", "off")
    async with serve(ROUTES, sandbox_env, *args) as (base, proc, lines):
        deadline = time.monotonic() + 20
        while len(await _pids(base, 10)) < 2:
            assert time.monotonic() < deadline, "two workers never answered"
            await asyncio.sleep(0.1)
        victim = min(_children(proc.pid))
        survivor = max(_children(proc.pid))
        os.kill(victim, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            # meanwhile: requests on new connections are answered, by the other worker.  Those the kernel
            # queued on the stopped one wait until it is killed; their reset makes aiohttp retry
            answers = await asyncio.gather(*(_answered_by(base) for _ in range(10)))
            assert answers == [survivor] * 10, answers
            assert time.monotonic() - stopped_at < TIMEOUT + 3
            # the supervisor kills it after TIMEOUT of silence and forks another
            while victim in _children(proc.pid) or len(_children(proc.pid)) < 2:
                assert time.monotonic() - stopped_at < TIMEOUT + 5, _children(proc.pid)
                await asyncio.sleep(0.1)
            assert time.monotonic() - stopped_at >= TIMEOUT - 0.5  # not before it was silent that long
        finally:
            if victim in _children(proc.pid):
                os.kill(victim, signal.SIGCONT)
        assert not os.path.exists(f"/proc/{victim}")  # killed, and reaped
        (replacement,) = _children(proc.pid) - {survivor}
        deadline = time.monotonic() + 15
        while set(await _pids(base, 20)) != {survivor, replacement}:  # the new pid serves
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert all(await asyncio.gather(*(_answered_by(base) for _ in range(10))))  # nobody is left hanging
    log = "".join(lines)
    assert f"worker {victim} sent no heartbeat for" in log and "killing it (SIGKILL)" in log, log
    assert f"worker {victim} was killed as hung; starting another" in log, log


async def test_worker_timeout_shorter_than_two_heartbeats_is_refused(sandbox_env: dict[str, str]) -> None:
    code, _out, err = await run_cli("serve", str(ROUTES), "--workers", "2", "--worker-timeout", "1", env=sandbox_env)
    assert code == 2 and "--worker-timeout must be at least 2" in err
