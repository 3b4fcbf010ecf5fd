"""The two per-request series (``gateway_requests_total``, ``gateway_request_duration_seconds``) as plain numbers.

Why not prometheus-client's ``Counter``/``Histogram`` per request: a labelled child's
``inc`` and ``observe`` take a lock and (with ``--workers``) check the pid on every
call, several per request; here a request is a dict lookup and two list additions.

One process: the numbers are exported at scrape time by a custom collector on the
registry (same names, HELP, labels and values as the client's own metric types).
``gateway serve --workers N`` (prometheus-client's multiprocess mode): the scraping
worker cannot read the other workers' memory, so the numbers gathered in one turn of
the event loop are added to the client's memory-mapped ``Counter``/``Histogram`` at the
end of that turn (and before this worker answers ``/metrics``).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

REQUESTS = ("gateway_requests_total", "Stable-side requests answered.")
DURATION = ("gateway_request_duration_seconds", "Stable-side request latency.")
_CLASSES = {n: f"{n}xx" for n in range(10)}


class RequestStats:
    """Per (route, method, status class) counts and per (route, method) latency buckets."""

    def __init__(self, registry: CollectorRegistry, buckets: tuple[float, ...], *, multiprocess: bool) -> None:
        self._bounds = buckets
        self._les = [*(floatToGoString(b) for b in buckets), "+Inf"]  # type: ignore[no-untyped-call]
        #: counts since the start (one process) or since the last flush (multiprocess)
        self._counts: dict[tuple[str, str, str], int] = {}
        #: per key: a count per bucket (the last is +Inf), then the sum of the observed seconds
        self._hist: dict[tuple[str, str], list[float]] = {}
        self._flush_queued = False
        self._counter: Counter | None = None
        self._histogram: Histogram | None = None
        if multiprocess:
            self._counter = Counter(*REQUESTS, ["route", "method", "status_class"], registry=registry)
            self._histogram = Histogram(*DURATION, ["route", "method"], buckets=buckets, registry=registry)
        else:
            registry.register(self)

    def add(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered stable request."""
        key = (route, method, _CLASSES.get(status // 100) or f"{status // 100}xx")
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        hkey = (route, method)
        row = self._hist.get(hkey)
        if row is None:
            row = self._hist[hkey] = [0.0] * (len(self._bounds) + 2)
        row[bisect_left(self._bounds, seconds)] += 1
        row[-1] += seconds
        if self._counter is not None and not self._flush_queued:
            self._flush_queued = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: nothing else would flush
                self.flush()

    def flush(self) -> None:
        """Multiprocess mode: add what was gathered to the shared (memory-mapped) values."""
        self._flush_queued = False
        counter, histogram = self._counter, self._histogram
        if counter is None or histogram is None:
            return
        counts, hist = self._counts, self._hist
        self._counts, self._hist = {}, {}
        for key, n in counts.items():
            counter.labels(*key).inc(n)
        for hkey, row in hist.items():
            child = histogram.labels(*hkey)
            child._sum.inc(row[-1])
            for i, hits in enumerate(row[:-1]):
                if hits:
                    child._buckets[i].inc(hits)

    def collect(self) -> Iterator[Metric]:
        """One process: the families as prometheus-client's own types would expose them."""
        requests = CounterMetricFamily(*REQUESTS, labels=["route", "method", "status_class"])
        for key, n in list(self._counts.items()):
            requests.add_metric(key, float(n))
        yield requests
        duration = HistogramMetricFamily(*DURATION, labels=["route", "method"])
        for hkey, row in list(self._hist.items()):
            acc, buckets = 0.0, []
            for le, hits in zip(self._les, row, strict=False):
                acc += hits
                buckets.append((le, acc))
            duration.add_metric(hkey, buckets, row[-1])
        yield duration
