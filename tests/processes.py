"""Running ``gateway serve`` as a real process for tests: a free port, readiness, clean stop."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def serve(
    config: Path,
    env: dict[str, str],
    *args: str,
    stdout: bool = False,
    launcher: Sequence[str] = ("-m", "gateway"),
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process, list[str]]]:
    """``gateway serve`` on a free port until the block ends; yields its URL, process and stderr lines.

    ``stdout``: keep the process's stdout readable (``proc.stdout``) rather than discarding it.
    ``launcher``: the interpreter arguments that run the gateway (e.g. ``-c`` code that sets limits first).
    """
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *launcher,
        "serve",
        str(config),
        "--port",
        str(port),
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE if stdout else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []

    async def pump() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            lines.append(raw.decode())

    reader = asyncio.create_task(pump())
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"{base}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("gateway did not start: " + "".join(lines))
        yield base, proc, lines
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()  # workers follow: they get SIGTERM when their supervisor dies
        await proc.wait()
        await reader


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """``python -m gateway ARGS`` to its end: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:  # a command that should have ended serves instead: stop it, fail the test
        proc.terminate()  # gateway serve's workers follow their supervisor
        await proc.wait()
        raise AssertionError(f"python -m gateway {' '.join(args)} did not end within 60 s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
