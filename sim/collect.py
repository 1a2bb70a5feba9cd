"""Metrics collection: what a run measured, as one mergeable results object.

The engine reports each finished request to a :class:`Collector` (buffered, binned in
bulk with NumPy into log histograms, so memory does not grow with the number of
requests). At the end :meth:`Collector.results` hands a :class:`SimResults` to
:mod:`geoshard.sim.run`, which turns it into ``result.json``. Results of independent
parts of a topology (see :mod:`geoshard.sim.parallel`) merge with :func:`merge_results`.

Everything is counted after the warm-up (arrival time ``t0 >= warmup``), except the
per-second time series, which covers the whole run.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoshard.spec import REQUEST_TYPES, STAGES

from .metrics import LogHistogram, bin_into, buckets
from .pools import Pool

__all__ = [
    "CACHE_LEVELS",
    "Collector",
    "Counters",
    "PoolStats",
    "SimResults",
    "merge_results",
    "shift_results",
]

CACHE_LEVELS: tuple[str, ...] = ("l1", "l2", "regional")


@dataclass
class Counters:
    """Run-wide counts (after warm-up)."""

    degraded: int = 0
    failed: int = 0
    shed: int = 0
    spilled: int = 0
    stale_route_errors: int = 0
    no_allowed_region: int = 0
    degraded_by_stage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))

    def add(self, other: Counters) -> None:
        """Add another part's counts."""
        for k in (
            "degraded",
            "failed",
            "shed",
            "spilled",
            "stale_route_errors",
            "no_allowed_region",
        ):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for s, n in other.degraded_by_stage.items():
            self.degraded_by_stage[s] = self.degraded_by_stage.get(s, 0) + n


@dataclass
class PoolStats:
    """What one pool measured (times are full-scale times: stretched busy time over the
    stretched window gives the full-scale share)."""

    name: str
    region: str
    kind: str
    capacity: int
    requests: int
    busy_ms: float
    demand_ms: float
    demand_by_second: list[float]
    joins_by_second: list[int]
    wait_ms: float
    waits: LogHistogram
    zero_waits: int
    max_queue: int

    @classmethod
    def of(cls, pool: Pool) -> PoolStats:
        """Snapshot a finished pool."""
        pool.flush_waits()
        return cls(
            pool.name,
            pool.region,
            pool.kind,
            pool.capacity,
            pool.grants,
            pool.busy_ms,
            pool.demand_ms,
            list(pool.demand_by_second),
            list(pool.joins_by_second),
            pool.wait_ms,
            pool.waits,
            pool.zero_waits,
            pool.max_queue,
        )

    def wait_quantile(self, q: float) -> float:
        """The ``q`` quantile of the queueing delay (zeros included), ms."""
        n = self.waits.count + self.zero_waits
        if not n:
            return 0.0
        rank = q * n
        if rank <= self.zero_waits:
            return 0.0
        return self.waits.quantile((rank - self.zero_waits) / self.waits.count)

    def merge(self, other: PoolStats) -> None:
        """Add what the same pool measured in another time segment of the run (the
        per-second series are aligned on the run's seconds, see :func:`shift_results`)."""
        self.requests += other.requests
        self.busy_ms += other.busy_ms
        self.demand_ms += other.demand_ms
        self.demand_by_second = _add_lists(self.demand_by_second, other.demand_by_second)
        self.joins_by_second = _add_lists(self.joins_by_second, other.joins_by_second)
        self.wait_ms += other.wait_ms
        self.waits.merge(other.waits)
        self.zero_waits += other.zero_waits
        self.max_queue = max(self.max_queue, other.max_queue)


def _add_lists(a: list[Any], b: list[Any]) -> list[Any]:
    if len(a) < len(b):
        a, b = b, a
    out = list(a)
    for i, v in enumerate(b):
        out[i] += v
    return out


def _placed(values: list[Any], offset: int, keep_from: int, n: int, zero: Any) -> list[Any]:
    """A per-second series of a segment placed on the run's ``n`` seconds: local second
    ``i >= keep_from`` goes to ``i + offset``."""
    out = [zero() for _ in range(n)] if callable(zero) else [zero] * n
    for i in range(keep_from, len(values)):
        if 0 <= i + offset < n:
            out[i + offset] = values[i]
    return out


def shift_results(
    res: SimResults, offset_s: int, keep_from_s: int, seconds: int, pool_seconds: int
) -> SimResults:
    """The results of a time segment on the run's clock, ready for :func:`merge_results`.

    The segment's local second ``i`` is the run's second ``i + offset_s``. Its per-second
    arrival series keep the seconds from ``keep_from_s`` (the lead-in before is not
    measured, and the previous segment covers it); a pool's per-second demand keeps
    every second, for the joins of measured requests only are binned. ``seconds`` and
    ``pool_seconds`` are the lengths of the run's series.
    """
    out = copy.copy(res)
    out.seconds = seconds
    out.ts_requests = _placed(res.ts_requests, offset_s, keep_from_s, seconds, 0)
    out.ts_errors = _placed(res.ts_errors, offset_s, keep_from_s, seconds, 0)
    out.ts_lookups = _placed(res.ts_lookups, offset_s, keep_from_s, seconds, 0)
    out.ts_hits = _placed(res.ts_hits, offset_s, keep_from_s, seconds, 0)
    out.ts_hist = {
        t: _placed(hs, offset_s, keep_from_s, seconds, LogHistogram)
        for t, hs in res.ts_hist.items()
    }
    out.pools = {}
    for name, ps in res.pools.items():
        out.pools[name] = dataclasses.replace(
            ps,
            demand_by_second=_placed(ps.demand_by_second, offset_s, 0, pool_seconds, 0.0),
            joins_by_second=_placed(ps.joins_by_second, offset_s, 0, pool_seconds, 0),
        )
    return out


@dataclass
class SimResults:
    """Everything a run measured, keyed by names (mergeable across parts of a topology).

    Attributes:
        regions: client regions, in spec order.
        hist: ``(type, client region) -> latency histogram`` of answered requests.
        within: ``(type, region) -> answers within the type's p99 target`` (a degraded
            answer only when the spec accepts it).
        failed: ``(type, region) -> requests that got no answer`` (failed or shed).
        degraded: ``(type, region) -> degraded answers``.
        ts_requests, ts_errors, ts_lookups, ts_hits: per second of arrival time.
        ts_hist: ``type -> per second latency histograms``.
        pools: per pool name.
        cache_hits, cache_misses: per level.
        counts: run-wide counts.
        audit_checks, audit_violations, audit_examples: the residency audit.
        served_by: ``(client region, entry region) -> requests``.
        arrived: requests simulated in full; ``cache_only``: slice requests that only
            walked the caches.
        epochs: how often the router's view of health changed.
    """

    regions: list[str]
    seconds: int
    hist: dict[tuple[str, str], LogHistogram] = field(default_factory=dict)
    within: dict[tuple[str, str], int] = field(default_factory=dict)
    failed: dict[tuple[str, str], int] = field(default_factory=dict)
    degraded: dict[tuple[str, str], int] = field(default_factory=dict)
    ts_requests: list[int] = field(default_factory=list)
    ts_errors: list[int] = field(default_factory=list)
    ts_lookups: list[int] = field(default_factory=list)
    ts_hits: list[int] = field(default_factory=list)
    ts_hist: dict[str, list[LogHistogram]] = field(default_factory=dict)
    pools: dict[str, PoolStats] = field(default_factory=dict)
    cache_hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CACHE_LEVELS, 0))
    cache_misses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CACHE_LEVELS, 0))
    counts: Counters = field(default_factory=Counters)
    audit_checks: int = 0
    audit_violations: int = 0
    audit_examples: list[str] = field(default_factory=list)
    served_by: dict[tuple[str, str], int] = field(default_factory=dict)
    arrived: int = 0
    cache_only: int = 0
    epochs: int = 0
    cache_model: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


def _add_into(a: dict[Any, int], b: dict[Any, int]) -> None:
    for k, v in b.items():
        a[k] = a.get(k, 0) + v


def merge_results(parts: list[SimResults]) -> SimResults:
    """One :class:`SimResults` from the results of independent parts of a topology.

    The parts share the client-region order and the number of seconds; counts add up,
    histograms merge, and the same pool from several time segments of a run
    (:func:`shift_results`) merges into one.
    """
    out = SimResults(list(parts[0].regions), parts[0].seconds)
    n = out.seconds
    out.ts_requests, out.ts_errors = [0] * n, [0] * n
    out.ts_lookups, out.ts_hits = [0] * n, [0] * n
    out.ts_hist = {t: [LogHistogram() for _ in range(n)] for t in REQUEST_TYPES}
    for p in parts:
        for k, h in p.hist.items():
            out.hist.setdefault(k, LogHistogram()).merge(h)
        _add_into(out.within, p.within)
        _add_into(out.failed, p.failed)
        _add_into(out.degraded, p.degraded)
        for i in range(n):
            out.ts_requests[i] += p.ts_requests[i]
            out.ts_errors[i] += p.ts_errors[i]
            out.ts_lookups[i] += p.ts_lookups[i]
            out.ts_hits[i] += p.ts_hits[i]
        for t, hs in p.ts_hist.items():
            for i, h in enumerate(hs):
                out.ts_hist[t][i].merge(h)
        for name, ps in p.pools.items():
            if name in out.pools:
                out.pools[name].merge(ps)
            else:
                out.pools[name] = dataclasses.replace(ps, waits=ps.waits.copy())
        _add_into(out.cache_hits, p.cache_hits)
        _add_into(out.cache_misses, p.cache_misses)
        out.counts.add(p.counts)
        out.audit_checks += p.audit_checks
        out.audit_violations += p.audit_violations
        out.audit_examples.extend(p.audit_examples)
        _add_into(out.served_by, p.served_by)
        out.arrived += p.arrived
        out.cache_only += p.cache_only
        out.epochs = max(out.epochs, p.epochs)
        out.cache_model.update(p.cache_model)
    out.audit_examples = sorted(out.audit_examples)[:10]
    return out


class Collector:
    """Buffers finished requests and bins them in bulk.

    Args:
        regions: client regions, in spec order.
        duration_s: simulated seconds (the time series has one row per second).
        warm_ms: requests that arrived before this are not counted in the totals.
        p99_ms: per request type, the p99 target (``inf`` without an SLO).
        accept_degraded: per request type, whether a degraded answer may count as within.
    """

    def __init__(
        self,
        regions: list[str],
        duration_s: float,
        warm_ms: float,
        p99_ms: list[float],
        accept_degraded: list[bool],
    ) -> None:
        self.regions = regions
        self.nreg = len(regions)
        self.warm_ms = warm_ms
        self.seconds = max(1, int(np.ceil(duration_s)))
        ntyp = len(REQUEST_TYPES)
        self.hist = [LogHistogram() for _ in range(ntyp * self.nreg)]
        self.within = [0] * (ntyp * self.nreg)
        self.failed = [0] * (ntyp * self.nreg)
        self.degraded = [0] * (ntyp * self.nreg)
        self._p99 = np.repeat(np.array(p99_ms, dtype=np.float64), self.nreg)
        self._accept = np.repeat(np.array(accept_degraded, dtype=bool), self.nreg)
        n = self.seconds + 1
        self.ts_requests = [0] * n
        self.ts_errors = [0] * n
        self.ts_lookups = [0] * n
        self.ts_hits = [0] * n
        self.ts_hist = [LogHistogram() for _ in range(n * ntyp)]
        self.counts = Counters()
        self._buf: list[tuple[float, int, float, bool]] = []
        self._add = self._buf.append

    def done(self, t0: float, ri: int, ti: int, latency_ms: float, degraded: bool = False) -> None:
        """A request answered ``latency_ms`` after it arrived at ``t0``."""
        self._add((t0, ti * self.nreg + ri, latency_ms, degraded))  # binned at flush

    def fail(self, t0: float, ri: int, ti: int, reason: str) -> None:
        """A request got no answer: ``stale`` (a dead hop), ``shed`` or ``no_region``."""
        sec = int(t0 * 0.001)
        if sec < len(self.ts_requests):
            self.ts_requests[sec] += 1
            self.ts_errors[sec] += 1
        if t0 < self.warm_ms:
            return
        self.failed[ti * self.nreg + ri] += 1
        c = self.counts
        if reason == "shed":
            c.shed += 1
        else:
            c.failed += 1
            if reason == "stale":
                c.stale_route_errors += 1
            elif reason == "no_region":
                c.no_allowed_region += 1

    def flush(self, min_rows: int = 1) -> None:
        """Bin the buffered answers into the histograms, SLO counts and time series, once
        there are ``min_rows`` or more (each binning has a fixed cost of a few dozen array
        operations, so a run at a few hundred answers a second bins every few seconds)."""
        if len(self._buf) < max(min_rows, 1):
            return
        rows = np.array(self._buf, dtype=np.float64)  # (n, 4), converted in C
        self._buf.clear()
        t0, lat = rows[:, 0], rows[:, 2]
        code = rows[:, 1].astype(np.int64)
        deg = rows[:, 3] != 0.0
        b = buckets(lat)
        sec = np.minimum((t0 * 0.001).astype(np.int64), len(self.ts_requests) - 1)
        per_sec = np.bincount(sec, minlength=len(self.ts_requests))
        for s_ in np.flatnonzero(per_sec).tolist():
            self.ts_requests[s_] += int(per_sec[s_])
        ntyp = len(REQUEST_TYPES)
        bin_into(self.ts_hist, sec * ntyp + code // self.nreg, b, lat)
        m = t0 >= self.warm_ms
        if m.any():
            code, b, lat, deg = code[m], b[m], lat[m], deg[m]
            bin_into(self.hist, code, b, lat)
            ok = (lat <= self._p99[code]) & (~deg | self._accept[code])
            size = len(self.hist)
            wc = np.bincount(code[ok], minlength=size)
            for c_ in np.flatnonzero(wc).tolist():
                self.within[c_] += int(wc[c_])
            dg = np.bincount(code[deg], minlength=size)
            for c_ in np.flatnonzero(dg).tolist():
                self.degraded[c_] += int(dg[c_])

    def results(self, pools: list[Pool], **extra: Any) -> SimResults:
        """The run's :class:`SimResults` (call after the run; flushes)."""
        self.flush()
        n = self.seconds
        out = SimResults(list(self.regions), n)
        for ti, t in enumerate(REQUEST_TYPES):
            for ri, r in enumerate(self.regions):
                c = ti * self.nreg + ri
                if self.hist[c].count or self.failed[c]:
                    out.hist[(t, r)] = self.hist[c]
                    out.within[(t, r)] = self.within[c]
                    out.failed[(t, r)] = self.failed[c]
                    out.degraded[(t, r)] = self.degraded[c]
        out.ts_requests = self.ts_requests[:n]
        out.ts_errors = self.ts_errors[:n]
        out.ts_lookups = self.ts_lookups[:n]
        out.ts_hits = self.ts_hits[:n]
        ntyp = len(REQUEST_TYPES)
        out.ts_hist = {
            t: [self.ts_hist[s * ntyp + ti] for s in range(n)] for ti, t in enumerate(REQUEST_TYPES)
        }
        out.pools = {p.name: PoolStats.of(p) for p in pools}
        out.counts = self.counts
        for k, v in extra.items():
            setattr(out, k, v)
        return out
