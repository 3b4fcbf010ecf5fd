"""Counters and histograms for the per-request series, as plain numbers.

Why not prometheus-client's ``Counter``/``Histogram`` on the request path: a labelled
child's ``inc`` or ``observe`` takes a lock and (with ``--workers``) checks the pid, and
a request made four to six such calls.  Here a child is a list of floats.

One process: the numbers are exported at scrape time by the family itself, registered
as a custom collector (the same names, HELP, labels and values as the client's own
types would expose).  ``gateway serve --workers N`` (prometheus-client's multiprocess
mode): the scraping worker cannot read the other workers' memory, so what a child
gathered in one turn of the event loop is added to a client ``Counter``/``Histogram``
(memory-mapped) at the end of that turn.  Children are never removed (label values come
from the config: route and upstream names, status classes, verdicts).
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString


class _Family:
    """Children by label values, and the end-of-turn flush of multiprocess mode."""

    def __init__(
        self, registry: CollectorRegistry, name: str, doc: str, labelnames: Sequence[str], multiprocess: bool | None
    ) -> None:
        self.name, self.doc, self.labelnames = name, doc, list(labelnames)
        self._dirty: list[_Child] = []
        self._queued = False
        if multiprocess is None:
            multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._shared = self._make_shared(registry) if multiprocess else None
        if self._shared is None:
            registry.register(self)

    def _make_shared(self, registry: CollectorRegistry) -> Counter | Histogram:
        raise NotImplementedError

    def collect(self) -> Iterator[Metric]:
        raise NotImplementedError

    def _touched(self, child: _Child) -> None:
        """Multiprocess mode: ``child`` has news for the shared values; flushed at the end of this turn."""
        child.dirty = True
        self._dirty.append(child)
        if not self._queued:
            self._queued = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: nothing else would flush it
                self.flush()

    def flush(self) -> None:
        """Add what the children gathered since the last flush to the shared values (multiprocess mode)."""
        self._queued = False
        dirty, self._dirty = self._dirty, []
        for child in dirty:
            child.dirty = False
            child.push()


class _Child:
    __slots__ = ("dirty", "family", "labels", "pushed", "shared", "values")

    def __init__(self, family: _Family, labels: tuple[str, ...], size: int) -> None:
        self.family = family
        self.labels = labels
        #: counts (a counter: one; a histogram: per bucket, +Inf last) then, for a histogram, the sum
        self.values = [0.0] * size
        self.pushed = [0.0] * size
        self.dirty = False
        self.shared = family._shared.labels(*labels) if family._shared is not None else None

    def push(self) -> None:
        raise NotImplementedError


class CounterChild(_Child):
    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        self.values[0] += amount
        if self.shared is not None and not self.dirty:
            self.family._touched(self)

    def push(self) -> None:
        now = self.values[0]
        if now != self.pushed[0]:
            self.shared.inc(now - self.pushed[0])  # type: ignore[union-attr]
            self.pushed[0] = now


class HistogramChild(_Child):
    __slots__ = ("bounds",)

    def __init__(self, family: FastHistogram, labels: tuple[str, ...]) -> None:
        super().__init__(family, labels, len(family.bounds) + 2)
        self.bounds = family.bounds

    def observe(self, amount: float) -> None:
        values = self.values
        values[bisect_left(self.bounds, amount)] += 1  # le: a value on a bound counts in that bucket
        values[-1] += amount
        if self.shared is not None and not self.dirty:
            self.family._touched(self)

    def push(self) -> None:
        shared: Any = self.shared  # a prometheus-client Histogram child: its values, added to directly
        values, pushed = self.values, self.pushed
        for i, now in enumerate(values):
            if now != pushed[i]:
                target = shared._sum if i == len(values) - 1 else shared._buckets[i]
                target.inc(now - pushed[i])
                pushed[i] = now


class FastCounter(_Family):
    def __init__(
        self,
        name: str,
        doc: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry,
        multiprocess: bool | None = None,
    ) -> None:
        """``multiprocess``: None reads it from ``PROMETHEUS_MULTIPROC_DIR`` (gateway.workers sets it)."""
        self._children: dict[tuple[str, ...], CounterChild] = {}
        super().__init__(registry, name, doc, labelnames, multiprocess)

    def _make_shared(self, registry: CollectorRegistry) -> Counter:
        return Counter(self.name, self.doc, self.labelnames, registry=registry)

    def labels(self, *values: str) -> CounterChild:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values!r}")
            child = self._children[values] = CounterChild(self, values, 1)
        return child

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, child in list(self._children.items()):
            family.add_metric(labels, child.values[0])
        yield family


class FastHistogram(_Family):
    def __init__(
        self,
        name: str,
        doc: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
        multiprocess: bool | None = None,
    ) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self._les = [*(floatToGoString(b) for b in self.bounds), "+Inf"]  # type: ignore[no-untyped-call]
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        super().__init__(registry, name, doc, labelnames, multiprocess)

    def _make_shared(self, registry: CollectorRegistry) -> Histogram:
        return Histogram(self.name, self.doc, self.labelnames, buckets=self.bounds, registry=registry)

    def labels(self, *values: str) -> HistogramChild:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values!r}")
            child = self._children[values] = HistogramChild(self, values)
        return child

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, child in list(self._children.items()):
            values = child.values
            acc, buckets = 0.0, []
            for le, hits in zip(self._les, values, strict=False):  # (the sum comes last, after +Inf)
                acc += hits
                buckets.append((le, acc))
            family.add_metric(labels, buckets, values[-1])
        yield family
