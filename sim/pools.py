"""FIFO server pools: an API pool, a hot node, a warm pool.

A :class:`Pool` has exactly the semantics of ``simpy.Resource`` plus a service
``timeout`` (first come, first served, work-conserving, ``capacity`` servers), computed
instead of simulated with events: in a FIFO queue requests start in the order they join,
so a request joining at ``t`` starts at ``max(t, earliest time a server is free)`` and
holds that server until start + service (the Kiefer-Wolfowitz recursion). Joins are made
in time order, so the service end is known at once.

**Time stretch (the faithful slice).** A run at scale ``R`` sends a pool ``R`` of its
full-scale traffic (a thinned Poisson stream is Poisson) and stretches each service time
by ``1 / R``: the pool is then the full-scale pool in slow motion, with the same
utilisation, the same queue-length distribution, and waits ``1 / R`` times as long. The
pool hands back *real* times: a request that joins at ``t`` and would leave the stretched
pool at ``end`` continues at ``t + R x (end - t)``. At ``R = 1`` nothing changes.

**Deferred joins.** A visit whose end starts nothing shared (a feature read's hot-tier
read, a write's primary and replica copies, a recommend's recall and last API step) is
not an event: it is queued here with its time and applied, in time order, before the
next join or queue probe at a later time, or at a flush. The pool sees exactly the same
sequence of joins as with one event per visit. A pool fed only by the deferred joins of
another (an API pool's recommend precision steps come from its region's warm pool) names
that pool its ``upstream``: the upstream's due joins are applied first, so every join
they start is queued in time.

Examples:
    >>> import numpy as np
    >>> from geoshard.spec import ConstantDist
    >>> from geoshard.sim.dists import Sampler
    >>> pool = Pool("r/api", "r", "api", 1, Sampler(ConstantDist(ms=2.0), np.random.default_rng(0)))
    >>> pool.join(0.0), pool.join(1.0)   # the second waits 1 ms
    (2.0, 4.0)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from heapq import heappop, heappush, heapreplace
from itertools import count
from typing import Any

import numpy as np

from .dists import Sampler
from .metrics import LogHistogram, bin_values

__all__ = ["Pool"]


class Pool:
    """A FIFO queue of ``capacity`` servers with time stretch and deferred joins.

    Args:
        name: ``<region>/api``, ``<region>/hot-<i>`` or ``<region>/warm``.
        region: where it runs.
        kind: ``api``, ``hot`` or ``warm``.
        capacity: servers (API servers x workers, a hot node's workers, warm nodes x workers).
        service: its service-time sampler (ms).
        scale: ``R``; service times are stretched by ``1 / R``.
        spill_at: the queue length above which the API pool spills.
        warm_ms, until: the measured window (ms): joins made in it are measured (the
            pool's own clock decides, not when the request arrived), and service past
            ``until`` is not busy time.
        seconds: length of the per-second demand series (joins after it are not binned).
        seq: the shared counter that orders deferred joins at equal times.

    Attributes:
        busy_ms: server time (stretched) inside the measured window, of any join, so
            ``busy_ms / (capacity x window)`` is the utilisation, at most 1.
        demand_by_second: the (stretched) service time those joins asked for, per second
            of join time: over a span, ``demand / (capacity x span)`` is the offered load,
            above 1 when the pool is overloaded; ``joins_by_second`` counts those joins
            (the offered load's sampling error shrinks with their number).
        waits: the histogram of the real waits of measured joins (``zero_waits`` joins
            did not wait); ``max_queue``: the longest queue seen.
    """

    __slots__ = (
        "_buf",
        "_draw",
        "_nsec",
        "_seq",
        "busy_ms",
        "capacity",
        "deferred",
        "demand_by_second",
        "free",
        "joins_by_second",
        "kind",
        "max_queue",
        "name",
        "region",
        "scale",
        "service",
        "spill_at",
        "stretch",
        "until",
        "upstream",
        "waiting",
        "waits",
        "warm_ms",
        "zero_waits",
    )

    def __init__(
        self,
        name: str,
        region: str,
        kind: str,
        capacity: int,
        service: Sampler,
        *,
        scale: float = 1.0,
        spill_at: float = float("inf"),
        warm_ms: float = 0.0,
        until: float = float("inf"),
        seconds: int = 0,
        seq: Iterator[int] | None = None,
    ) -> None:
        self.name, self.region, self.kind, self.capacity = name, region, kind, capacity
        self.free = [0.0] * capacity  # heap: when each server is next free (stretched)
        self.waiting: deque[float] = deque()  # start times of the requests still in line
        self.service = service
        self.scale = scale
        self.stretch = 1.0 / scale
        self.spill_at = spill_at
        self.warm_ms = warm_ms
        self.until = until
        self.busy_ms = 0.0
        self.demand_by_second = [0.0] * max(seconds, 1)
        self.joins_by_second = [0] * max(seconds, 1)
        self._nsec = max(seconds, 1)
        self.max_queue = 0
        self._draw = service.draw_function()
        self.zero_waits = 0
        self.waits = LogHistogram()
        self._buf: list[float] = []
        self.deferred: list[tuple[float, int, Any, Callable[[Any, float], None] | None]] = []
        self._seq = seq if seq is not None else count()
        self.upstream: Pool | None = None

    # ------------------------------------------------------------------ joins
    def join(self, now: float) -> float:
        """A request joins at ``now`` (joins come in time order); returns its real end time."""
        up = self.upstream
        if up is not None and up.deferred and up.deferred[0][0] <= now:
            up.apply_deferred(now)
        if self.deferred and self.deferred[0][0] <= now:
            self.apply_deferred(now)
        return self._join(now)

    def _join(self, now: float) -> float:
        try:
            s = self._draw() * self.stretch
        except IndexError:
            self.service.refill()
            s = self._draw() * self.stretch
        free = self.free
        start = free[0]
        if start < now:
            start = now
        end = start + s
        heapreplace(free, end)
        wait = start - now
        lo, hi = self.warm_ms, self.until
        if start < hi and end > lo:  # the service's part inside the window is busy time
            self.busy_ms += (end if end < hi else hi) - (start if start > lo else lo)
        measuring = lo <= now < hi
        if measuring:
            sec = int(now * 0.001)
            if sec < self._nsec:
                self.demand_by_second[sec] += s
                self.joins_by_second[sec] += 1
            if wait > 0.0:
                self._buf.append(wait * self.scale)
            else:
                self.zero_waits += 1
        if wait > 0.0:
            w = self.waiting
            while w and w[0] <= now:
                w.popleft()
            w.append(start)
            if measuring and len(w) > self.max_queue:
                self.max_queue = len(w)
        return now + (end - now) * self.scale

    def defer(self, at: float, req: Any, fin: Callable[[Any, float], None] | None) -> None:
        """Join at ``at`` (>= the current time) without an event; ``fin(req, real_end)``
        runs when the join is applied (``None``: nothing to do then)."""
        heappush(self.deferred, (at, next(self._seq), req, fin))

    def apply_deferred(self, upto: float) -> None:
        """Apply, in time order, the deferred joins due at or before ``upto``."""
        d = self.deferred
        while d and d[0][0] <= upto:
            at, _, req, fin = heappop(d)
            end = self._join(at)
            if fin is not None:
                fin(req, end)

    def queue_len(self, now: float) -> int:
        """Requests waiting for a server at ``now``."""
        up = self.upstream
        if up is not None and up.deferred and up.deferred[0][0] <= now:
            up.apply_deferred(now)
        if self.deferred and self.deferred[0][0] <= now:
            self.apply_deferred(now)
        w = self.waiting
        while w and w[0] <= now:
            w.popleft()
        return len(w)

    # ------------------------------------------------------------------ results
    @property
    def demand_ms(self) -> float:
        """The (stretched) service time measured joins asked for."""
        return float(sum(self.demand_by_second))

    @property
    def grants(self) -> int:
        """Measured joins."""
        return sum(self.joins_by_second)

    @property
    def wait_ms(self) -> float:
        """The sum of the real waits of measured joins (exact)."""
        return self.waits.total + float(sum(self._buf))

    def flush_waits(self, min_rows: int = 0) -> None:
        """Bin the buffered waits once there are ``min_rows`` or more (0: always; the engine
        calls it every simulated second with a bound that keeps the buffer's memory small
        and each binning large enough to be cheap)."""
        if len(self._buf) >= min_rows:
            self._flush_waits()

    def _flush_waits(self) -> None:
        if self._buf:
            bin_values(self.waits, np.array(self._buf, dtype=np.float64))
            self._buf.clear()

    def finish(self) -> None:
        """Apply every deferred join and bin the buffered waits (end of the run)."""
        self.apply_deferred(float("inf"))
        self._flush_waits()
