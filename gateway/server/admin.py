"""The admin endpoints (/admin/reload, /admin/cache/purge), relayed to every worker of ``--workers N``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from aiohttp import web

from gateway.cache.admin import purge_request
from gateway.config import ConfigError
from gateway.errors import Conflict, GatewayError, Unprocessable
from gateway.peers import PeerAnswer
from gateway.server.state import GATEWAY

log = logging.getLogger("gateway")


_RELAYED_NOTE = {False: "", True: " (relayed by another worker)"}


def _relayed(request: web.Request) -> bool:
    """True for an admin call another worker relayed here (applied here only, not relayed on)."""
    peers = request.app[GATEWAY].peers
    return peers is not None and peers.relayed(request)


async def _relay(
    request: web.Request, rid: str, body: bytes, content_type: str | None, agree: Callable[[PeerAnswer], bool]
) -> list[PeerAnswer]:
    """An admin call this worker has applied, applied by every other worker too (``--workers``).

    Raises a 500 ``worker_failed`` naming each worker that did not answer 200 or whose
    answer does not ``agree`` with this worker's.
    """
    peers = request.app[GATEWAY].peers
    if peers is None:
        return []
    answers = await peers.relay(request, rid, body, content_type)
    failed = [a for a in answers if a.status != 200 or not agree(a)]
    if failed:
        raise GatewayError(
            f"worker {peers.pid} applied it, but {len(failed)} other worker(s) did not; see details",
            code="worker_failed",
            details=[{"pid": a.pid, "status": a.status, "error": a.body.get("error")} for a in failed],
        )
    return answers


async def cache_purge(request: web.Request, rid: str) -> web.Response:
    runtime = request.app[GATEWAY].runtime
    who = runtime.access.require_admin(request)
    relayed = _relayed(request)
    result = await purge_request(request, runtime.proxy.cache, runtime.config)
    log.info("cache purge by admin key %r%s: %s", who, _RELAYED_NOTE[relayed], json.dumps(result))
    others: list[PeerAnswer] = []
    if not relayed:
        body, ctype = await request.read(), request.headers.get("Content-Type")
        others = await _relay(request, rid, body, ctype, lambda a: isinstance(a.body.get("deleted"), int))
    result["deleted"] += sum(a.body["deleted"] for a in others)
    result["workers"] = 1 + len(others)
    return web.json_response(result)


async def reload(request: web.Request, rid: str) -> web.Response:
    gw = request.app[GATEWAY]
    who = gw.runtime.access.require_admin(request)
    relayed = _relayed(request)
    text = None
    if relayed:
        # the text the worker that took the call accepted, not the file again; unless a newer one
        # was accepted since (this call waited in the socket's backlog while the worker started)
        text = await request.text()
        if gw.peers is not None and gw.peers.last_good() != text:
            raise Conflict("a newer routes text was accepted since this reload was relayed", code="stale_relay")
    try:
        cfg = gw.reload(text=text)
    except ConfigError as exc:
        raise Unprocessable(
            f"{len(exc.problems)} problem(s) in {gw.runtime.config.path}; still serving the previous config",
            code="invalid_config",
            details=[str(p) for p in exc.problems],
        ) from None
    log.info("config reloaded by admin key %r%s", who, _RELAYED_NOTE[relayed])
    others: list[PeerAnswer] = []
    if not relayed:

        def agree(answer: PeerAnswer) -> bool:
            return answer.body.get("digest") == cfg.digest  # every worker on the same text

        others = await _relay(request, rid, cfg.source.encode(), "application/yaml", agree)
    return web.json_response(
        {"status": "reloaded", "digest": cfg.digest, "routes": len(cfg.routes), "workers": 1 + len(others)}
    )
