"""``gateway serve --workers N``: N processes on one port, with metrics summed across them.

Why processes: one Python process serves from one core; a second core needs a second
interpreter.  Each worker binds its own listening socket with ``SO_REUSEPORT`` and
the kernel spreads new connections across them (no shared accept lock, no socket
handed around).  The supervisor (the process you started) only forks, forwards
signals (SIGHUP: every worker reloads; SIGTERM/SIGINT: every worker drains and
exits) and restarts a worker that died, or that hung: each worker's event loop
writes a heartbeat byte to its own pipe every second, and a worker silent for
``--worker-timeout`` seconds (stopped, deadlocked, stuck in a CPU loop) is killed
with SIGKILL and replaced.

Metrics stay correct across workers with prometheus-client's multiprocess mode:
each worker writes its values to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR``
and whichever worker answers ``/metrics`` reads them all (counters and histograms
summed; gauges combined as each declares with ``multiprocess_mode``).  The variable
must be set before ``prometheus_client`` is first imported, which is why
``use_multiprocess_metrics`` runs before the server module is.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("gateway.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: a worker that dies sooner than this after its start counts towards a crash loop
_QUICK_DEATH = 2.0
#: this many quick deaths in a row and the supervisor gives up
_CRASH_LOOP = 5
#: exit codes of a worker that no restart can fix (3: the port cannot be bound): stop everything.
#: The config and options were checked by the supervisor before it forked.
FATAL_CODES = frozenset({3})
#: how often a worker's event loop beats, and how long a new worker may take to beat first
HEARTBEAT_EVERY = 1.0
_FIRST_BEAT_WITHIN = 30.0
#: ``gateway serve --worker-timeout``'s default: a worker silent this long is hung
HUNG_AFTER = 10.0


_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def process_id() -> int:
    """``os.getpid()`` as of the last fork.

    prometheus-client asks for the pid on every metric update (to notice a fork); each
    ask is a system call, several per request.  A value refreshed by ``register_at_fork``
    gives it the same answer for free.
    """
    return _pid


#: the cycle collector's young-generation threshold in a serving process (CPython's default: 700)
GC_YOUNG_OBJECTS = 10_000


def settle_gc() -> None:
    """Keep the cycle collector off the request path of a serving process.

    A request's objects are freed by reference counting, but with dozens of requests in
    flight the young generation always holds ~1,000 live objects, so at CPython's default
    threshold it was scanned hundreds of times a second and found nothing: about a tenth
    of a busy worker's CPU (measured with ``gc.callbacks``).  What start-up built (modules,
    config, the app) is frozen out of every scan (``gc.freeze``) and the young threshold
    is raised: cyclic garbage (an exception and its traceback, say) is still collected,
    after 10,000 net allocations instead of 700.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_OBJECTS, older, oldest)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def use_multiprocess_metrics() -> str | None:
    """Point prometheus-client at a fresh directory; returns it if we created it (removed on exit).

    An operator's own ``PROMETHEUS_MULTIPROC_DIR`` is used as given, emptied of the
    previous run's files first (stale files would be summed in).
    """
    given = os.environ.get(MULTIPROC_ENV)
    made = None
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(given, name))
    else:
        made = tempfile.mkdtemp(prefix="routegate-metrics-")
        os.environ[MULTIPROC_ENV] = made
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue(process_identifier=process_id)  # type: ignore[no-untyped-call]
    return made


def scrape(own: CollectorRegistry) -> bytes:
    """The /metrics body in multiprocess mode: every worker's values, plus this worker's own collectors.

    Collectors that are not value-backed (computed at scrape time, like credential
    expiry, or an ``Info``) exist only in the answering worker's registry; they are
    the same in every worker (they come from the config), so they are taken from it.
    The route health series are merged per route, not per series (gateway.route_series).
    """
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from gateway import route_series

    families = list(MultiProcessCollector(None).collect())  # type: ignore[no-untyped-call]
    route_series.merge(families, os.environ[MULTIPROC_ENV])  # one code per down route, as one process has
    names = {f.name for f in families}
    families += [f for f in own.collect() if f.name not in names]

    class _All:
        def collect(self) -> list[object]:
            return list(families)

    merged = CollectorRegistry()
    merged.register(_All())  # type: ignore[arg-type]
    return generate_latest(merged)


def port_taken(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be had alone (someone listens there), or None.

    The workers bind with ``SO_REUSEPORT``, which would let them join any other process
    of this user already listening on the port, and the kernel would split the traffic
    between two gateways.  A plain bind (``SO_REUSEADDR`` only, as any server) finds the
    port taken first, so ``--workers`` refuses it like a single process does.
    """
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return exc
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return exc
    return None


#: in a worker: the write end of its heartbeat pipe (None: not a worker of a supervisor)
_heartbeat_fd: int | None = None


def start_heartbeat(loop: asyncio.AbstractEventLoop) -> None:
    """Beat from the event loop itself, so a loop that stops running stops the beats."""
    fd = _heartbeat_fd
    if fd is None:
        return

    def beat() -> None:
        with contextlib.suppress(OSError):  # a full pipe (the supervisor is busy) or a gone supervisor
            os.write(fd, b".")
        loop.call_later(HEARTBEAT_EVERY, beat)

    beat()


@dataclass(slots=True)
class _Child:
    started: float
    #: the read end of its heartbeat pipe, and when it last beat (None: not yet)
    fd: int
    beat: float | None = None
    killed: bool = False


def _hung(child: _Child, now: float, hung_after: float) -> float | None:
    """How long a child has been silent, if that is too long."""
    if child.killed:
        return None
    if child.beat is None:
        silent = now - child.started
        return silent if silent > max(hung_after, _FIRST_BEAT_WITHIN) else None
    silent = now - child.beat
    return silent if silent > hung_after else None


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker if the supervisor dies (even by SIGKILL), so none is orphaned."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def fork_workers(
    count: int,
    made_dirs: list[str],
    on_exit: Callable[[int], None] | None = None,
    hung_after: float = HUNG_AFTER,
) -> int | None:
    """Fork ``count`` workers.  In a worker: returns None (go on and serve).

    In the supervisor: runs until every worker is gone and returns the exit code, then
    removes ``made_dirs``; ``on_exit(pid)`` is called as each worker is found dead.  A
    worker whose heartbeats stop for ``hung_after`` seconds is killed (and so replaced).
    """
    children: dict[int, _Child] = {}
    stopping = False
    quick_deaths = 0
    code = 0

    def spawn() -> bool:
        global _heartbeat_fd
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker's loop installs its reload
            _die_with_parent()
            if os.getppid() != supervisor:  # the supervisor died before prctl: do not serve alone
                os._exit(0)
            for fd in [read_end, *(c.fd for c in children.values())]:
                os.close(fd)  # the supervisor's ends
            os.set_blocking(write_end, False)
            _heartbeat_fd = write_end
            return True
        os.close(write_end)
        os.set_blocking(read_end, False)
        children[pid] = _Child(time.monotonic(), read_end)
        return False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if signum != signal.SIGHUP else signal.SIGHUP)

    def listen(timeout: float) -> None:
        """Wait up to ``timeout`` for heartbeats; kill the workers silent too long."""
        fds = {c.fd: c for c in children.values()}
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select(list(fds), [], [], timeout)
            now = time.monotonic()
            for fd in ready:
                with contextlib.suppress(BlockingIOError):
                    if os.read(fd, 4096):
                        fds[fd].beat = now
        now = time.monotonic()
        for pid, child in children.items():
            silent = _hung(child, now, hung_after)
            if silent is not None:
                log.error("worker %d sent no heartbeat for %.1fs: hung; killing it (SIGKILL)", pid, silent)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                child.killed = True

    supervisor = os.getpid()
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        for _ in range(count):
            if spawn():
                return None
        log.info("supervisor %d: %d workers %s", supervisor, count, sorted(children))
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                listen(0.25)  # also how soon a dead worker is noticed
                continue
            child = children.pop(pid, None)
            if child is None:
                continue
            os.close(child.fd)
            if multiprocess_enabled():
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
            if on_exit is not None:
                on_exit(pid)
            exit_code = os.waitstatus_to_exitcode(status)
            if stopping:
                continue
            if exit_code in FATAL_CODES:
                log.error("worker %d exited with %d; stopping all workers", pid, exit_code)
                code = exit_code
                forward(signal.SIGTERM, None)
                continue
            quick_deaths = quick_deaths + 1 if time.monotonic() - child.started < _QUICK_DEATH else 0
            if quick_deaths >= _CRASH_LOOP:
                log.error("workers keep dying right after they start; stopping")
                code = 1
                forward(signal.SIGTERM, None)
                continue
            why = "was killed as hung" if child.killed else f"exited with {exit_code}"
            log.error("worker %d %s; starting another", pid, why)
            time.sleep(min(0.2 * quick_deaths, 1.0))
            if spawn():
                return None
        return code
    finally:
        if os.getpid() == supervisor:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for made in made_dirs:
                shutil.rmtree(made, ignore_errors=True)
            for child in children.values():
                with contextlib.suppress(OSError):
                    os.close(child.fd)
