"""Run both sandboxes on real sockets: in-process for tests, or as a standalone process.

``python -m sandbox.runner --observable-port 9001 --posthog-port 9002`` prints
``export`` lines with the URLs and demo credentials, so a shell (or another test
process) can point the gateway at the sandboxes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from . import observable, posthog
from .switches import help_epilog

__all__ = ["Sandboxes", "export_lines", "gateway_env", "main", "start_sandboxes", "until_stopped"]


@dataclass
class Sandboxes:
    """Both running sandboxes; ``close()`` stops them."""

    observable_url: str
    posthog_url: str
    observable_state: observable.ObservableState
    posthog_state: posthog.PostHogState
    runners: tuple[web.AppRunner, ...]

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()

    async def __aenter__(self) -> Sandboxes:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    netloc = f"[{host}]" if ":" in host else host
    return runner, f"http://{netloc}:{bound_port}"


async def start_sandboxes(
    host: str = "127.0.0.1",
    observable_port: int = 0,
    posthog_port: int = 0,
    *,
    observable_state: observable.ObservableState | None = None,
    posthog_state: posthog.PostHogState | None = None,
) -> Sandboxes:
    """Start both sandboxes (port 0 = any free port) and return their URLs and states."""
    obs_state = observable_state if observable_state is not None else observable.ObservableState()
    ph_state = posthog_state if posthog_state is not None else posthog.PostHogState()
    obs_runner, obs_url = await _serve(observable.create_app(obs_state), host, observable_port)
    try:
        ph_runner, ph_url = await _serve(posthog.create_app(ph_state), host, posthog_port)
    except BaseException:
        await obs_runner.cleanup()
        raise
    return Sandboxes(obs_url, ph_url, obs_state, ph_state, (obs_runner, ph_runner))


def gateway_env(sandboxes: Sandboxes) -> dict[str, str]:
    """The env that points the shipped routes.yaml at ``sandboxes``, with the demo credentials."""
    obs = sandboxes.observable_state
    return {
        "OBSERVABLE_SESSION": obs.session_cookie,
        "OBSERVABLE_TOKEN": obs.token,
        "POSTHOG_API_KEY": sorted(sandboxes.posthog_state.api_keys)[0],
        "OBSERVABLE_API_URL": sandboxes.observable_url,
        "POSTHOG_URL": sandboxes.posthog_url,
    }


def export_lines(sandboxes: Sandboxes) -> list[str]:
    """``gateway_env`` as shell ``export`` lines."""
    return [f"export {name}={value}" for name, value in gateway_env(sandboxes).items()]


async def until_stopped() -> None:
    """Wait for SIGINT or SIGTERM: how the sandbox, the demo and the bench upstream end."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _run(args: argparse.Namespace) -> None:
    week_ms = 7 * 24 * 3600 * 1000
    obs_state = observable.ObservableState(args.seed, session_expiration_ms=int(time.time() * 1000) + week_ms)
    ph_state = posthog.PostHogState(args.seed)
    sandboxes = await start_sandboxes(
        args.host,
        args.observable_port,
        args.posthog_port,
        observable_state=obs_state,
        posthog_state=ph_state,
    )
    try:
        print("\n".join(export_lines(sandboxes)), flush=True)
        await until_stopped()
    finally:
        await sandboxes.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run both sandboxes until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.runner",
        description="Run the upstream sandboxes.",
        epilog=help_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--observable-port", type=int, default=0)
    parser.add_argument("--posthog-port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
