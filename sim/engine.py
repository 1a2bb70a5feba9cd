"""The discrete-event engine: the whole topology on SimPy, with the real routing objects.

The engine does not re-implement the system. Every request asks the same
:class:`~geoshard.cluster.routing.Router` the deployment uses for its entry region and
replicas, looks its real key up in the same cache policies
(:func:`geoshard.storage.cache.make_policy`), and every store, cache fill and
processing step of personal data is audited with the same
:class:`~geoshard.regions.residency.ResidencyPolicy`. Only time and I/O are replaced:
queues are SimPy resources, networks and caches are sampled delays.

Clock unit: milliseconds (``env.now``). Cache TTLs get seconds (``now / 1000``).

Lean path (few SimPy events per request, no process per request): a request is a small
callback state machine (:class:`_Req`) that is itself the SimPy event it waits on, on
the environment's own heap. Pools (:class:`Pool`) are FIFO c-server queues with exactly
``simpy.Resource`` semantics, computed by the Kiefer-Wolfowitz recursion when a request
joins (in time order), so the service end is known at once. Pure delays (RTTs, cache
service times, the integrity check) are accumulated and paid in one wake-up just before
the next queue. Events per request: the arrival, then per queue visited one wake-up to
join it and one at its service end only when something shared happens then (cache
lookups and fills, a write's acknowledgement); recall -> integrity -> precision and the
asynchronous replica copies cost no service-end event. About 5.1 events per request on
examples/local.yaml. Cache hits, routing and auditing are plain Python decisions.

Semantics worth knowing:

* Routes are memoised per (user, op, entry region for reads) and entry regions per
  (client region, jurisdiction, data class); the memo is cleared whenever the router's
  view of health changes (a *health epoch*). The users of each arrival batch are routed
  in one vectorised ``Router.replicas_batch`` call (the same answers as ``route``).
* Cache keys are the integer user ids (unique across jurisdictions).
* Faults change the real state at once; the router learns ``detection_delay_s`` later.
  In between, requests that reach a dead region/node or cross a partition wait
  ``timeout_ms`` and fail (``stale_route_errors``); a recommend whose sourcing hits a
  dead node degrades instead (no personal features).
* Stage budgets are checked post hoc: when a stage overruns ``budget``, the response is
  labelled degraded and its latency counts the stage as ``budget`` (the client got the
  fallback at the deadline); the abandoned work still loads its resource. This costs no
  extra events; a ``timeout | process`` race would cost two per stage and give the same
  latencies, except that later stages start a little later here.
* Reads (a full cache miss) go to the route's replica nearest the entry region
  (``Router.route(..., near=entry)``), usually a copy in the entry region itself.
* Writes: acked when the primary and its in-region Redis replica have applied it
  (``WAIT 1``: one intra-region hop + the replica's service time; ``hot.replicas == 0``:
  the primary alone). The ring replicas in other regions are written asynchronously
  (half an RTT from the primary's region, then their node's queue; they load the queue
  but not the request's latency). A write whose primary is unreachable fails, never acks.
* Overload: when the entry API queue is longer than ``spill_queue_factor x workers``,
  the request spills to the nearest other region that may process the data; when no
  such region has room and the queue exceeds ``shed_queue`` it is shed (429).
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from heapq import heappush, heapreplace
from typing import Any

import numpy as np
import simpy

from geoshard.cluster.routing import Health, Router
from geoshard.errors import NoHealthyReplicaError, ResidencyError
from geoshard.spec import REQUEST_TYPES, STAGES, Spec
from geoshard.storage.cache import CachePolicy, make_policy

from .dists import Sampler
from .metrics import _INV_LOG_G, _ZERO, LogHistogram
from .workload import ArrivalStream

__all__ = ["CACHE_LEVELS", "EngineOptions", "Pool", "Simulation"]

CACHE_LEVELS: tuple[str, ...] = ("l1", "l2", "regional")
_FR, _REC, _WR = 0, 1, 2  # indices into REQUEST_TYPES
_FAIL = -1.0
_FLUSH_AT = 1 << 16  # completions buffered before binning (bounded memory)


def _buckets(x: np.ndarray) -> np.ndarray:
    """:func:`geoshard.sim.metrics.bucket` of every value, vectorised."""
    b = np.full(x.shape, _ZERO, dtype=np.int64)
    pos = x > 0.0
    b[pos] = np.floor(np.log(x[pos]) * _INV_LOG_G)
    return b


def _bin_into(hists: list[LogHistogram], group: np.ndarray, b: np.ndarray, x: np.ndarray) -> None:
    """Add values ``x`` with buckets ``b`` to ``hists[group]`` (vectorised ``add_bucket``)."""
    key = group * (1 << 32) + (b + (1 << 31))
    uk, cnt = np.unique(key, return_counts=True)
    for k, n in zip(uk.tolist(), cnt.tolist()):
        g, bb = divmod(k, 1 << 32)
        c = hists[g].counts
        bb -= 1 << 31
        c[bb] = c.get(bb, 0) + n
    size = len(hists)
    cnt_g = np.bincount(group, minlength=size)
    tot_g = np.bincount(group, weights=x, minlength=size)
    for g in np.flatnonzero(cnt_g).tolist():
        h = hists[g]
        h.count += int(cnt_g[g])
        h.total += float(tot_g[g])


@dataclass(frozen=True)
class EngineOptions:
    """Knobs of the engine that are not in the spec.

    Attributes:
        spill_queue_factor: spill when the API queue is longer than this x its workers.
        shed_queue: shed when every candidate API queue is longer than this (and the
            spill threshold).
        timeout_ms: how long a client waits on a dead hop before the request fails.
        integrity_ms: the integrity stage's constant cost.
    """

    spill_queue_factor: float = 4.0
    shed_queue: int = 4096
    timeout_ms: float = 1000.0
    integrity_ms: float = 1.0


class Pool:
    """A FIFO queue of ``capacity`` servers (an API pool, a hot node, a warm pool).

    Exactly the semantics of ``simpy.Resource`` + a service ``timeout`` (first come,
    first served, work-conserving, ``capacity`` servers), computed instead of simulated
    with events: in a FIFO queue requests start in the order they join, so a request
    joining at ``t`` starts at ``max(t, earliest time a server is free)`` and occupies
    that server until start + service (the Kiefer-Wolfowitz recursion). Joins must be
    made in time order (the engine joins from events at the join time); the service end
    is then known at once, and costs an event only when something happens then.

    Attributes:
        name: ``<region>/api``, ``<region>/hot-<i>`` or ``<region>/warm``.
        region: where it runs.
        free: a heap of the times each server is next free.
        waiting: the start times (non-decreasing) of requests that joined but have not
            started; ``queue_len(t)`` is the queue length at ``t``.
        service: its service-time sampler (ms).
        until: the end of the measured window (ms): service past it is not busy time.
        busy_ms: server time spent inside the measured window by requests that joined
            after warm-up, so ``busy_ms / (capacity x window)`` is at most 1.
        demand_ms: the whole service time those requests asked for, wherever it falls:
            ``demand_ms / (capacity x window)`` is the offered load, above 1 when the
            pool is overloaded (the backlog outlives the window).
        wait_ms, grants, max_queue: measured after warm-up.
    """

    __slots__ = (
        "busy_ms",
        "capacity",
        "demand_ms",
        "free",
        "grants",
        "max_queue",
        "name",
        "region",
        "service",
        "spill_at",
        "until",
        "wait_ms",
        "waiting",
    )

    def __init__(self, env: simpy.Environment, name: str, region: str, capacity: int,
                 service: Sampler, spill_at: float = float("inf"),
                 until: float = float("inf")) -> None:
        self.name, self.region, self.capacity = name, region, capacity
        self.free = [0.0] * capacity      # heap: when each server is next free
        self.waiting: deque[float] = deque()  # start times of the requests still in line
        self.service = service
        self.until = until
        self.busy_ms = 0.0
        self.demand_ms = 0.0
        self.wait_ms = 0.0
        self.grants = 0
        self.max_queue = 0
        self.spill_at = spill_at

    def queue_len(self, now: float) -> int:
        """Requests waiting for a server at ``now``."""
        w = self.waiting
        while w and w[0] <= now:
            w.popleft()
        return len(w)

    def join(self, now: float, measuring: bool) -> float:
        """A request joins at ``now`` (joins come in time order); returns its service end."""
        s = self.service()
        free = self.free
        start = free[0]
        if start < now:  # noqa: PLR1730 (hot path: no call)
            start = now
        end = start + s
        heapreplace(free, end)
        if measuring:
            self.demand_ms += s
            self.grants += 1
            until = self.until
            if start < until:
                self.busy_ms += (end if end < until else until) - start  # noqa: FURB136 (hot path: no call)
        if start > now:
            w = self.waiting
            while w and w[0] <= now:
                w.popleft()
            w.append(start)
            if measuring:
                self.wait_ms += start - now
                if len(w) > self.max_queue:  # noqa: PLR1730
                    self.max_queue = len(w)
        return end


class _Req:
    """One request in flight: its state, and the SimPy event it currently waits on."""

    __slots__ = (
        "_ok",
        "after",
        "callbacks",
        "cb",
        "credit",
        "degraded",
        "draw",
        "entry",
        "found",
        "hop",
        "j",
        "l1",
        "leg",
        "node",
        "nreg",
        "pending",
        "pool",
        "ri",
        "route",
        "t0",
        "ti",
        "uid",
        "v0",
    )
    callbacks: list[Any] | None   # SimPy reads these two when the event fires
    _ok: bool
    after: Any                    # what to do when the features are sourced
    cb: list[Any] | None          # callbacks at the end of the current service
    pool: Pool
    l1: CachePolicy | None
    found: str | None
    node: str
    nreg: str
    hop: float
    v0: float
    route: tuple[tuple[str, ...], tuple[str, ...]]

    def __init__(self, t0: float, ri: int, ti: int, uid: int, j: str, entry: str,
                 draw: int) -> None:
        self._ok = True
        self.t0, self.ri, self.ti, self.uid, self.j, self.entry, self.draw = \
            t0, ri, ti, uid, j, entry, draw
        self.pending = 0.0
        self.credit = 0.0
        self.degraded = False
        self.leg = 0.0


class _Job:
    """Background work (an asynchronous replica write) queued at a hot node."""

    __slots__ = ("_ok", "callbacks", "cb", "pool", "t0")
    callbacks: list[Any] | None
    cb: list[Any] | None
    pool: Pool

    def __init__(self, t0: float) -> None:
        self._ok = True
        self.t0 = t0


class _Arrivals:
    """The arrival chain's event: the arrival due next (``pending``) and the rest (``it``)."""

    __slots__ = ("_ok", "callbacks", "it", "pending")
    callbacks: list[Any] | None

    def __init__(self, it: Iterator[tuple[float, int, int, int, int]]) -> None:
        self._ok = True
        self.it = it
        self.pending: tuple[float, int, int, int, int] | None = None


_NO_PLAN: tuple[Any, ...] = ()


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


class Simulation:
    """One simulation run of a spec.

    Args:
        spec: the effective (already scaled) spec.
        seed: the seed of every random stream.
        duration_s: simulated seconds of arrivals.
        warmup_s: measurements start here (time series cover the whole run).
        options: engine knobs.

    Examples:
        >>> from geoshard.spec import load_spec
        >>> sim = Simulation(load_spec("examples/local.yaml"), seed=1, duration_s=5)  # doctest: +SKIP
        >>> sim.run()                                                             # doctest: +SKIP
    """

    def __init__(self, spec: Spec, seed: int, duration_s: float, warmup_s: float = 0.0,
                 options: EngineOptions | None = None) -> None:
        self.spec, self.seed = spec, seed
        self.opt = options or EngineOptions()
        self.duration_ms = duration_s * 1000.0
        self.warm_ms = warmup_s * 1000.0
        self.env = env = simpy.Environment()
        seqs = np.random.SeedSequence(seed).spawn(64)
        self._rngs = iter([np.random.default_rng(s) for s in seqs])
        self.router = Router.from_spec(spec)
        self.policy = self.router.residency
        net = self.router.network
        self.regions = list(spec.regions)
        self.jur = {r: spec.regions[r].jurisdiction for r in self.regions}
        self.rtt = {(a, b): net.rtt_ms(a, b) for a in self.regions for b in self.regions}
        self.client_ms = net.client_ms
        o = self.opt
        self.api: dict[str, Pool] = {}
        self.warm: dict[str, Pool] = {}
        self.hot: dict[str, Pool] = {}
        self.l1: dict[str, list[CachePolicy]] = {}
        self.l2: dict[str, CachePolicy] = {}
        self.l3: dict[str, CachePolicy] = {}
        c = spec.caches
        end = self.duration_ms  # pools count busy time up to the end of the window
        for r, reg in spec.regions.items():
            cap = reg.api.servers * reg.api.workers
            self.api[r] = Pool(env, f"{r}/api", r, cap, Sampler(reg.api.service_time, next(self._rngs)),
                               spill_at=o.spill_queue_factor * cap, until=end)
            self.warm[r] = Pool(env, f"{r}/warm", r, reg.warm.nodes * reg.warm.workers,
                                Sampler(reg.warm.service_time, next(self._rngs)), until=end)
            for node in reg.hot_node_names(r):
                self.hot[node] = Pool(env, node, r, reg.hot.workers,
                                      Sampler(reg.hot.service_time, next(self._rngs)), until=end)
            if c.l1:
                self.l1[r] = [self._cache(c.l1) for _ in range(reg.api.servers)]
            if c.l2:
                self.l2[r] = self._cache(c.l2)
            if c.regional:
                self.l3[r] = self._cache(c.regional)
        self._intra = {r: self.rtt[(r, r)] for r in self.regions}
        self.l1_ms = Sampler(c.l1.service_time, next(self._rngs)) if c.l1 else None
        self.l2_ms = Sampler(c.l2.service_time, next(self._rngs)) if c.l2 else None
        self.l3_ms = Sampler(c.regional.service_time, next(self._rngs)) if c.regional else None
        self.value_bytes = spec.workload.value_bytes
        rec_p99 = spec.slo.latency["recommend"].p99_ms if "recommend" in spec.slo.latency else None
        self.budget = {s: (spec.slo.stage_budgets.get(s, 1.0) * rec_p99 if rec_p99 else float("inf"))
                       for s in STAGES}
        self.p99_target = [spec.slo.latency[t].p99_ms if t in spec.slo.latency else float("inf")
                           for t in REQUEST_TYPES]
        items = spec.shards.items
        self.item_cats = sorted(items.shards) + ["(other)"]
        self.item_shard = [self.router.item_shard({items.attribute: cat}) for cat in self.item_cats]
        self.stream = ArrivalStream(spec, self.duration_ms, next(self._rngs),
                                    [next(self._rngs), next(self._rngs)])
        # each primary's in-region Redis replica (hot.replicas >= 1): acks a write (WAIT 1)
        # after one intra-region hop and its own service time; a pure delay (it serves no reads)
        self.hot_replica_ms: dict[str, Sampler | None] = {
            r: (Sampler(reg.hot.service_time, next(self._rngs)) if reg.hot.replicas >= 1 else None)
            for r, reg in spec.regions.items()}
        # health: real state now, and what the router believes
        self.known = Health()
        self.known_partitions: frozenset[frozenset[str]] = frozenset()
        self.down_nodes: set[str] = set()
        self.down_regions: set[str] = set()
        self.partitions: set[frozenset[str]] = set()
        self.spike: dict[str, float] = {}
        self._active: list[tuple[int, Any]] = []          # real faults in force
        self._known_active: list[tuple[int, Any]] = []    # faults the router knows about
        self.epochs = 0
        self._read_routes: dict[str, dict[int, tuple[tuple[str, ...], tuple[str, ...]] | None]] = {}
        self._write_routes: dict[int, tuple[tuple[str, ...], tuple[str, ...]] | None] = {}
        self._entries: dict[tuple[str, str, str], str | None] = {}
        self._spill_cands: dict[tuple[str, str, str], list[str]] = {}
        self._plans: dict[int, tuple[Any, ...]] = {}
        self._inval_regions: dict[str, tuple[str, ...]] = {}
        self._store_memo: dict[tuple[str, str, str], bool] = {}
        self._fill_ok: dict[tuple[str, str], bool] = {}
        self._audit_memo: dict[tuple[str, str, str, str], bool] = {}
        self.audit_checks = 0
        self.audit_violations = 0
        self.audit_examples: list[str] = []
        self.fault_log: list[dict[str, Any]] = []
        # metrics
        nreg, ntyp = len(self.regions), len(REQUEST_TYPES)
        self.hist = [[LogHistogram() for _ in range(nreg)] for _ in range(ntyp)]
        self.within = [[0] * nreg for _ in range(ntyp)]
        self._nreg = nreg
        self._hist_flat = [h for row in self.hist for h in row]      # index ti * nreg + ri
        self._p99_by_code = np.repeat(np.array(self.p99_target, dtype=np.float64), nreg)
        self._done_t0: list[float] = []
        self._done_code: list[int] = []
        self._done_lat: list[float] = []
        self._buf_t0 = self._done_t0.append
        self._buf_code = self._done_code.append
        self._buf_lat = self._done_lat.append
        self.failed = [[0] * nreg for _ in range(ntyp)]
        self.counts = Counters()
        self.cache_hits = dict.fromkeys(CACHE_LEVELS, 0)
        self.cache_misses = dict.fromkeys(CACHE_LEVELS, 0)
        nsec = int(duration_s) + 1
        self.ts_req = [0] * nsec
        self.ts_err = [0] * nsec
        self.ts_hist = [LogHistogram() for _ in range(nsec)]
        self.ts_lookups = [0] * nsec
        self.ts_hits = [0] * nsec
        self.arrived = 0
        self.served_by: dict[tuple[str, str], int] = {}
        # requests are callback state machines on SimPy's own event heap
        self._heap: list[Any] = env._queue  # type: ignore[assignment]
        self._eid = env._eid
        self._cb_join = [self._join]
        self._cb_join_warm = [self._join_warm]
        self._cb_join_api2 = [self._join_api2]
        self._cb_api1_done = [self._api1_done]
        self._cb_hot_done = [self._hot_done]
        self._cb_primary_done = [self._primary_done]
        self._cb_stale = [self._stale]
        self._cb_fetch_dead = [self._fetch_dead]
        self._cb_arrival = [self._next_arrival]

    # ------------------------------------------------------------------ building blocks
    def _cache(self, lvl: Any) -> CachePolicy:
        kw: dict[str, Any] = {"ttl_s": lvl.ttl_s}
        if lvl.capacity_items:
            kw["capacity_items"] = lvl.capacity_items
        else:
            kw["capacity_bytes"] = lvl.capacity_bytes
        return make_policy(lvl.policy, **kw)

    def _audit(self, j: str, dc: str, region: str, purpose: str, n: int = 1) -> bool:
        """Audit ``n`` store/fill/processing steps of personal data (same data, region and
        purpose); True when allowed."""
        self.audit_checks += n
        k = (j, dc, region, purpose)
        ok = self._audit_memo.get(k)
        if ok is None:
            try:
                self.policy.check(j, dc, region, purpose)  # type: ignore[arg-type]
                ok = True
            except ResidencyError:
                ok = False
            self._audit_memo[k] = ok
        if not ok:
            self.audit_violations += n
            if len(self.audit_examples) < 10:
                self.audit_examples.append(
                    f"t={self.env.now / 1000:.3f}s {purpose} {j} {dc} in {region}")
        return ok

    def _may_store(self, j: str, dc: str, region: str) -> bool:
        k = (j, dc, region)
        ok = self._store_memo.get(k)
        if ok is None:
            ok = self._store_memo[k] = self.policy.is_allowed(j, dc, region, "store")
        return ok

    def _hop(self, a: str, b: str) -> float:
        x = self.rtt[(a, b)]
        if self.spike:
            x += self.spike.get(a, 0.0) + (self.spike.get(b, 0.0) if a != b else 0.0)
        return x

    def _cut(self, a: str, b: str) -> bool:
        return a != b and frozenset((a, b)) in self.partitions

    def _read_route(self, uid: int, j: str, near: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """The user's features route, nearest ``near`` first (memoised per health epoch)."""
        memo = self._read_routes.get(near)
        if memo is None:
            memo = self._read_routes[near] = {}
        try:
            return memo[uid]
        except KeyError:
            val = memo[uid] = self._ask_router(uid, j, "user_features", "read", near)
            return val

    def _write_route(self, uid: int, j: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """The user's interactions route, primary first (memoised per health epoch)."""
        try:
            return self._write_routes[uid]
        except KeyError:
            val = self._write_routes[uid] = self._ask_router(uid, j, "interactions", "write", None)
            return val

    def _ask_router(self, uid: int, j: str, dc: str, op: str,
                    near: str | None) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        from geoshard.keys import UserKey

        try:
            rt = self.router.route(UserKey(j, uid), op, self.known, dc, near=near)  # type: ignore[arg-type]
        except NoHealthyReplicaError:
            return None
        return (rt.replicas, rt.regions)

    def _entry(self, creg: str, j: str, dc: str, uid: int) -> str | None:
        k = (creg, j, dc)
        try:
            return self._entries[k]
        except KeyError:
            pass
        from geoshard.keys import UserKey

        try:
            e: str | None = self.router.entry_region(creg, UserKey(j, uid), self.known, dc)
            if e is not None and self._known_cut(creg, e):
                e = next((r for r in self._candidates(creg, j, dc) if not self._known_cut(creg, r)),
                         None)
        except NoHealthyReplicaError:
            e = None
        self._entries[k] = e
        return e

    def _known_cut(self, a: str, b: str) -> bool:
        return a != b and frozenset((a, b)) in self.known_partitions

    def _candidates(self, creg: str, j: str, dc: str) -> list[str]:
        k = (creg, j, dc)
        c = self._spill_cands.get(k)
        if c is None:
            allowed = self.policy.allowed_regions(j, dc, "process")
            live = [r for r in allowed if r not in self.known.down_regions]
            c = self.router.network.by_distance(creg, live)
            self._spill_cands[k] = c
        return c

    def _new_epoch(self) -> None:
        self.epochs += 1
        self._read_routes.clear()
        self._write_routes.clear()
        self._entries.clear()
        self._spill_cands.clear()
        self._plans.clear()

    # ------------------------------------------------------------------ metrics
    def _done(self, t0: float, ri: int, ti: int, lat: float) -> None:
        """A completed request: buffered, binned in bulk by :meth:`_flush_done`."""
        self._buf_t0(t0)
        self._buf_code(ti * self._nreg + ri)
        self._buf_lat(lat)
        if len(self._done_lat) >= _FLUSH_AT:
            self._flush_done()

    def _flush_done(self) -> None:
        """Bin the buffered completions into the histograms, SLO counts and time series.

        The same buckets as :meth:`LogHistogram.add` (``floor(log(x) / log(gamma))``),
        computed with NumPy over the buffer; counts are exact, totals are summed in
        completion order within a flush. The buffer is bounded (``_FLUSH_AT``), so memory
        does not grow with the number of requests.
        """
        lat = np.array(self._done_lat, dtype=np.float64)
        if not lat.size:
            return
        t0 = np.array(self._done_t0, dtype=np.float64)
        code = np.array(self._done_code, dtype=np.int64)
        self._done_lat.clear()
        self._done_t0.clear()
        self._done_code.clear()
        b = _buckets(lat)
        sec = (t0 // 1000.0).astype(np.int64)
        per_sec = np.bincount(sec)
        ts_req = self.ts_req
        for s_, n in zip(np.flatnonzero(per_sec).tolist(), per_sec[per_sec > 0].tolist()):
            ts_req[s_] += n
        _bin_into(self.ts_hist, sec, b, lat)
        m = t0 >= self.warm_ms
        if m.any():
            code, b, lat = code[m], b[m], lat[m]
            _bin_into(self._hist_flat, code, b, lat)
            ok = np.bincount(code[lat <= self._p99_by_code[code]], minlength=len(self._hist_flat))
            nreg, within = self._nreg, self.within
            for c_ in np.flatnonzero(ok).tolist():
                within[c_ // nreg][c_ % nreg] += int(ok[c_])

    def _fail(self, t0: float, ri: int, ti: int, reason: str) -> None:
        sec = int(t0 // 1000.0)
        self.ts_req[sec] += 1
        self.ts_err[sec] += 1
        if t0 >= self.warm_ms:
            self.failed[ti][ri] += 1
            c = self.counts
            if reason == "shed":
                c.shed += 1
            else:
                c.failed += 1
                if reason == "stale":
                    c.stale_route_errors += 1
                elif reason == "no_region":
                    c.no_allowed_region += 1

    # ------------------------------------------------------------------ requests
    # A request is a small state machine (:class:`_Req`) that is itself the SimPy event
    # it waits on: ``_wake`` puts it on the environment's heap with the callback of its
    # next step. Pools are FIFO c-server queues driven by those callbacks.
    def _wake(self, ev: Any, delay: float, cb: list[Any]) -> None:
        ev.callbacks = cb
        heappush(self._heap, (self.env._now + delay, 1, next(self._eid), ev))

    def _go(self, ev: Any, delay: float, pool: Pool, cb: list[Any] | None) -> None:
        """After ``delay`` ms ``ev`` joins ``pool``; its service end runs ``cb`` (a callback
        list; ``None``: nothing to do then, and no event)."""
        ev.pool = pool
        ev.cb = cb
        ev.callbacks = self._cb_join
        heappush(self._heap, (self.env._now + delay, 1, next(self._eid), ev))

    def _acquire(self, ev: Any, pool: Pool, cb: list[Any] | None) -> None:
        """``ev`` joins ``pool`` now; its service end runs ``cb``."""
        ev.pool = pool
        ev.cb = cb
        self._join(ev)

    def _join(self, ev: Any) -> None:
        """``ev`` reaches ``ev.pool``: its service end is known at once (FIFO)."""
        end = ev.pool.join(self.env._now, ev.t0 >= self.warm_ms)
        cb = ev.cb
        if cb is not None:
            ev.callbacks = cb
            heappush(self._heap, (end, 1, next(self._eid), ev))

    def _arrive(self, t0: float, ri: int, ti: int, uid: int, draw: int) -> None:
        """One client request at ``t0`` (== now): the common case from a memoised plan.

        The plan of (client region, type) -- entry, its API pool, leg, audit answer --
        only changes with the router's view (health epoch) or the real state (faults),
        and is dropped at both; a request that must spill, shed or fail takes the
        general path (:meth:`_arrive_slow`).
        """
        plan = self._plans.get(ri * 3 + ti)
        if plan is None:
            plan = self._plans[ri * 3 + ti] = self._plan(ri, ti, uid)
        if plan is _NO_PLAN:
            self._arrive_slow(t0, ri, ti, uid, draw)
            return
        entry, api, j, leg, served_key, dc, audit_ok = plan
        if api.waiting and api.queue_len(t0) > api.spill_at:
            self._arrive_slow(t0, ri, ti, uid, draw)
            return
        req = _Req(t0, ri, ti, uid, j, entry, draw)
        req.leg = leg
        if audit_ok:
            self.audit_checks += 1
        else:
            self._audit(j, dc, entry, "process")
        if t0 >= self.warm_ms:
            self.served_by[served_key] = self.served_by.get(served_key, 0) + 1
        req.pool = api
        req.cb = self._cb_api1_done
        req.callbacks = self._cb_join
        heappush(self._heap, (t0 + leg, 1, next(self._eid), req))

    def _plan(self, ri: int, ti: int, uid: int) -> tuple[Any, ...]:
        creg = self.regions[ri]
        j = self.jur[creg]
        dc = "interactions" if ti == _WR else "user_features"
        entry = self._entry(creg, j, dc, uid)
        if entry is None or entry in self.down_regions or self._cut(creg, entry):
            return _NO_PLAN
        if creg != entry:
            leg = 0.5 * (self.client_ms + self._hop(creg, entry))
        else:
            leg = 0.5 * (self.client_ms + (self.spike.get(entry, 0.0) if self.spike else 0.0))
        if not leg > 0.0:
            return _NO_PLAN
        audit_ok = self.policy.is_allowed(j, dc, entry, "process")
        return (entry, self.api[entry], j, leg, (creg, entry), dc, audit_ok)

    def _arrive_slow(self, t0: float, ri: int, ti: int, uid: int, draw: int) -> None:
        """One client request at ``t0`` (== now): entry, spill/shed, then the first leg."""
        creg = self.regions[ri]
        j = self.jur[creg]
        dc = "interactions" if ti == _WR else "user_features"
        entry = self._entry(creg, j, dc, uid)
        if entry is None:
            self._fail(t0, ri, ti, "no_region")
            return
        api = self.api[entry]
        now = self.env._now
        if api.queue_len(now) > api.spill_at:
            alt = None
            for r in self._candidates(creg, j, dc):
                if r != entry and not self._known_cut(creg, r) and \
                        self.api[r].queue_len(now) <= self.api[r].spill_at:
                    alt = r
                    break
            if alt is not None:
                entry, api = alt, self.api[alt]
                if t0 >= self.warm_ms:
                    self.counts.spilled += 1
            elif api.queue_len(now) > self.opt.shed_queue:
                self._fail(t0, ri, ti, "shed")
                return
        req = _Req(t0, ri, ti, uid, j, entry, draw)
        if entry in self.down_regions or self._cut(creg, entry):
            self._wake(req, self.opt.timeout_ms, self._cb_stale)
            return
        # one leg of the client's round trip (client RTT + inter-region RTT when the entry
        # is not the client's region); the other leg is paid when the response leaves
        if creg != entry:
            leg = 0.5 * (self.client_ms + self._hop(creg, entry))
        else:
            leg = 0.5 * (self.client_ms + (self.spike.get(entry, 0.0) if self.spike else 0.0))
        req.leg = leg
        self._audit(j, dc, entry, "process")
        if t0 >= self.warm_ms:
            k = (creg, entry)
            self.served_by[k] = self.served_by.get(k, 0) + 1
        if leg > 0.0:
            self._go(req, leg, api, self._cb_api1_done)
        else:
            self._acquire(req, api, self._cb_api1_done)

    def _stale(self, req: _Req) -> None:
        self._fail(req.t0, req.ri, req.ti, "stale")

    def _api1_done(self, req: _Req) -> None:
        ti = req.ti
        if ti == _FR:
            req.after = self._fr_sourced
            self._fetch(req)
        elif ti == _WR:
            self._write(req)
        else:
            req.v0 = self.env._now
            req.after = self._rec_sourced
            self._fetch(req)

    def _fr_sourced(self, req: _Req) -> None:
        if req.pending == _FAIL:
            self._fail(req.t0, req.ri, _FR, "stale")
        else:
            self._done(req.t0, req.ri, _FR, self.env._now + req.pending + req.leg - req.t0)

    # recommend: sourcing -> recall (warm pool) -> integrity -> precision (API again)
    def _rec_sourced(self, req: _Req) -> None:
        now = self.env._now
        b = self.budget["sourcing"]
        pending = req.pending
        if pending < 0.0:  # dead node: the stage gives up at its budget
            pending = max(0.0, req.v0 + b - now)
            req.degraded = True
        d = now + pending - req.v0
        if d > b:
            req.credit += d - b
            self._degrade("sourcing", req.t0)
            req.degraded = True
        self._audit(req.j, "user_embeddings", req.entry, "process")
        req.v0 = now + pending
        req.callbacks = self._cb_join_warm
        heappush(self._heap, (now + pending, 1, next(self._eid), req))

    def _join_warm(self, req: _Req) -> None:
        """Recall and integrity: nothing shared happens when the warm service ends, so the
        request sleeps straight on to its precision step (one event saved)."""
        now = self.warm[req.entry].join(self.env._now, req.t0 >= self.warm_ms)  # service end
        budget = self.budget
        d = now - req.v0
        if d > budget["recall"]:
            req.credit += d - budget["recall"]
            self._degrade("recall", req.t0)
            req.degraded = True
        # integrity: availability, residency, dedupe, rules (a small constant)
        integ = self.opt.integrity_ms
        if integ > budget["integrity"]:
            req.credit += integ - budget["integrity"]
            self._degrade("integrity", req.t0)
            req.degraded = True
        req.v0 = now + integ
        req.callbacks = self._cb_join_api2
        heappush(self._heap, (now + integ, 1, next(self._eid), req))

    def _join_api2(self, req: _Req) -> None:
        """Precision on the API; the response only records metrics: no event at its end."""
        now = self.api[req.entry].join(self.env._now, req.t0 >= self.warm_ms)  # service end
        d = now - req.v0
        b = self.budget["precision"]
        if d > b:
            req.credit += d - b
            self._degrade("precision", req.t0)
            req.degraded = True
        if req.degraded and req.t0 >= self.warm_ms:
            self.counts.degraded += 1
        # the response travels back to the client
        self._done(req.t0, req.ri, _REC, now + req.leg - req.t0 - req.credit)

    def _degrade(self, stage: str, t0: float) -> None:
        if t0 >= self.warm_ms:
            self.counts.degraded_by_stage[stage] += 1

    def _fetch(self, req: _Req) -> None:
        """User features: L1 -> L2 -> regional -> nearest replica; fill caches on the way back.

        Cache levels are pure delays, accumulated in ``req.pending`` (paid before the
        next queue or added to the latency); only a hot-tier read costs events. Calls
        ``req.after(req)`` with ``req.pending`` the unpaid delay, or ``_FAIL`` after a
        dead hop.
        """
        t0 = req.t0
        entry = req.entry
        key = req.uid
        now_s = self.env._now / 1000.0
        measuring = t0 >= self.warm_ms
        sec = int(t0 // 1000.0)
        self.ts_lookups[sec] += 1
        pending = req.pending
        l1s = self.l1.get(entry)
        l1 = l1s[req.draw % len(l1s)] if l1s else None
        req.l1 = l1
        if l1 is not None:
            pending += self.l1_ms()  # type: ignore[misc]
            if l1.lookup(key, now_s):
                if measuring:
                    self.cache_hits["l1"] += 1
                self.ts_hits[sec] += 1
                req.pending = pending
                req.after(req)
                return
            if measuring:
                self.cache_misses["l1"] += 1
        intra = self._intra[entry]
        found = None
        l2 = self.l2.get(entry)
        if l2 is not None:
            pending += intra + self.l2_ms()  # type: ignore[misc]
            if l2.lookup(key, now_s):
                found = "l2"
            if measuring:
                if found:
                    self.cache_hits["l2"] += 1
                else:
                    self.cache_misses["l2"] += 1
        if found is None:
            l3 = self.l3.get(entry)
            if l3 is not None:
                pending += intra + self.l3_ms()  # type: ignore[misc]
                if l3.lookup(key, now_s):
                    found = "regional"
                if measuring:
                    if found:
                        self.cache_hits["regional"] += 1
                    else:
                        self.cache_misses["regional"] += 1
        req.found = found
        if found is not None:
            self.ts_hits[sec] += 1
            self._fill(req, now_s)
            req.pending = pending
            req.after(req)
            return
        route = self._read_route(req.uid, req.j, entry)
        node = nreg = None
        if route is not None:
            if not self.known_partitions:
                node, nreg = route[0][0], route[1][0]
            else:
                for n, r in zip(*route):
                    if not self._known_cut(entry, r):
                        node, nreg = n, r
                        break
        if node is None or nreg is None:
            req.pending = _FAIL
            req.after(req)
            return
        if (self.down_nodes and node in self.down_nodes) or \
                (self.down_regions and nreg in self.down_regions) or \
                (self.partitions and self._cut(entry, nreg)):
            wait = self.opt.timeout_ms if req.ti != _REC else min(
                self.opt.timeout_ms, self.budget["sourcing"])
            self._wake(req, pending + wait, self._cb_fetch_dead)
            return
        if self._audit_memo.get((req.j, "user_features", nreg, "store")):
            self.audit_checks += 1
        else:
            self._audit(req.j, "user_features", nreg, "store")
        hop = self._hop(entry, nreg) if self.spike else self.rtt[(entry, nreg)]
        pool = self.hot[node]
        if pool.service.constant == 0.0:
            # a zero-time server never queues: no events (exact)
            self._fill(req, now_s)
            req.pending = pending + hop
            req.after(req)
            return
        req.hop = hop * 0.5
        self._go(req, pending + hop * 0.5, pool, self._cb_hot_done)

    def _fetch_dead(self, req: _Req) -> None:
        req.pending = _FAIL
        req.after(req)

    def _hot_done(self, req: _Req) -> None:
        self._fill(req, self.env._now / 1000.0)
        req.pending = req.hop
        req.after(req)

    def _fill(self, req: _Req, now_s: float) -> None:
        """Fill the levels above the one that answered, in the entry region, if allowed."""
        j, entry = req.j, req.entry
        k = (j, entry)
        ok = self._fill_ok.get(k)
        if ok is None:
            # may the entry region store this jurisdiction's features? (then every fill's
            # audit passes too: the same policy answer; asked once per pair)
            ok = self._fill_ok[k] = self._may_store(j, "user_features", entry)
        if not ok:
            return
        found, l1 = req.found, req.l1
        l3 = self.l3.get(entry) if found is None else None
        l2 = self.l2.get(entry) if found is None or found == "regional" else None
        n = (l1 is not None) + (l2 is not None) + (l3 is not None)
        if n == 0:
            return
        # every fill is one audited store (same data, same region: one policy answer)
        if self._audit_memo.get((j, "user_features", entry, "store")):
            self.audit_checks += n
        elif not self._audit(j, "user_features", entry, "store", n):
            return
        key, vb = req.uid, self.value_bytes
        if l3 is not None:
            l3.admit(key, vb, now_s)
        if l2 is not None:
            l2.admit(key, vb, now_s)
        if l1 is not None:
            l1.admit(key, vb, now_s)

    def _write(self, req: _Req) -> None:
        """An interaction write: to the primary; acked with its in-region replica (WAIT 1)."""
        entry = req.entry
        route = self._write_route(req.uid, req.j)
        node = preg = None
        if route is not None:
            if not self.known_partitions:
                node, preg = route[0][0], route[1][0]
            else:
                for n, r in zip(*route):
                    if not self._known_cut(entry, r):
                        node, preg = n, r
                        break
        if node is None or preg is None:
            self._fail(req.t0, req.ri, _WR, "stale")
            return
        if (self.down_nodes and node in self.down_nodes) or \
                (self.down_regions and preg in self.down_regions) or \
                (self.partitions and self._cut(entry, preg)):
            self._wake(req, self.opt.timeout_ms, self._cb_stale)
            return
        if self._audit_memo.get((req.j, "interactions", preg, "store")):
            self.audit_checks += 1
        else:
            self._audit(req.j, "interactions", preg, "store")
        req.node, req.nreg, req.route = node, preg, route  # type: ignore[assignment]
        hop = self._hop(entry, preg) if self.spike else self.rtt[(entry, preg)]
        self._go(req, hop * 0.5, self.hot[node], self._cb_primary_done)

    def _primary_done(self, req: _Req) -> None:
        j, node, preg, entry = req.j, req.node, req.nreg, req.entry
        pending = 0.0
        rep_ms = self.hot_replica_ms[preg]
        memo = self._audit_memo
        if rep_ms is not None:  # WAIT 1: the in-region replica confirms before the ack
            if memo.get((j, "interactions", preg, "store")):
                self.audit_checks += 1
            else:
                self._audit(j, "interactions", preg, "store")
            pending = self.rtt[(preg, preg)] + rep_ms()
        spike = self.spike
        pending += (self._hop(preg, entry) if spike else self.rtt[(preg, entry)]) * 0.5
        nodes, regions = req.route
        faults = self.down_nodes or self.down_regions or self.partitions
        for i in range(1, len(nodes)) if nodes[0] == node else range(len(nodes)):
            # ring replicas elsewhere: asynchronous, off the latency
            n, r = nodes[i], regions[i]
            if n == node or (faults and (n in self.down_nodes or r in self.down_regions
                                         or self._cut(preg, r))):
                continue
            if memo.get((j, "interactions", r, "store")):
                self.audit_checks += 1
            else:
                self._audit(j, "interactions", r, "store")
            self._go(_Job(req.t0), (self._hop(preg, r) if spike else self.rtt[(preg, r)]) * 0.5,
                     self.hot[n], None)
        # the write changes the user's features: drop them from the shared caches and
        # from the L1 of the server that took the write (other L1s expire by TTL)
        key = req.uid
        l2, l3 = self.l2, self.l3
        regs = self._inval_regions.get(j)
        if regs is None:
            regs = self._inval_regions[j] = tuple(
                r for r in self.policy.allowed_regions(j, "user_features", "store")
                if r in l2 or r in l3)
        for r in regs:
            c = l2.get(r)
            if c is not None:
                c.invalidate(key)
            c = l3.get(r)
            if c is not None:
                c.invalidate(key)
        l1s = self.l1.get(entry)
        if l1s:
            l1s[req.draw % len(l1s)].invalidate(key)
        self._done(req.t0, req.ri, _WR, self.env._now + pending + req.leg - req.t0)

    def _next_arrival(self, ev: _Arrivals) -> None:
        """The arrival chain: handle the arrival due now, then sleep until the next one."""
        while True:
            a = ev.pending
            if a is not None:
                t, ri, ti, uid, draw = a
                self.arrived += 1
                self._arrive(t, ri, ti, uid, draw)
            a = next(ev.it, None)
            if a is None:
                return
            ev.pending = a
            if a[0] > self.env._now:
                ev.callbacks = self._cb_arrival
                heappush(self._heap, (a[0], 1, next(self._eid), ev))
                return

    def _arrival_tuples(self) -> Iterator[tuple[float, int, int, int, int]]:
        for batch in self.stream.batches():
            self._preroute(batch.region, batch.rtype, batch.user)
            yield from zip(batch.t_ms, batch.region, batch.rtype, batch.user, batch.draw)

    def _preroute(self, regions: list[int], rtypes: list[int], users: list[int]) -> None:
        """Ask the router, in one vectorised call per (jurisdiction, entry), for the routes
        of a batch's users not memoised yet in this health epoch.

        Exactly the answers the per-request lookups would get (a route is a pure function
        of key, health and entry region); routes are valid until the next health epoch,
        which clears the memo; a spilled request asks for its own route.
        """
        want: dict[tuple[str, str | None], set[int]] = {}
        reads, writes = self._read_routes, self._write_routes
        reg = np.asarray(regions)
        usr = np.asarray(users)
        is_wr = np.asarray(rtypes) == _WR
        for ri in np.unique(reg).tolist():
            creg = self.regions[ri]
            j = self.jur[creg]
            here = reg == ri
            # set.difference(dict) walks the (small) set and probes the dict
            new = set(usr[here & is_wr].tolist()).difference(writes)
            if new:
                want.setdefault((j, None), set()).update(new)
            read_users = usr[here & ~is_wr].tolist()
            if not read_users:
                continue
            e = self._entry(creg, j, "user_features", read_users[0])
            if e is None:
                continue
            new = set(read_users).difference(reads.get(e, ()))
            if new:
                want.setdefault((j, e), set()).update(new)
        for (j, near), uids in want.items():
            ids = sorted(uids)
            dc, op = ("interactions", "write") if near is None else ("user_features", "read")
            try:
                got: list[Any] = self.router.replicas_batch(j, ids, op, self.known, dc,
                                                            near=near)  # type: ignore[arg-type]
            except NoHealthyReplicaError:
                got = [None] * len(ids)
            if near is None:
                writes.update(zip(ids, got))
            else:
                memo = reads.get(near)
                if memo is None:
                    memo = reads[near] = {}
                memo.update(zip(ids, got))


    # ------------------------------------------------------------------ faults
    def _fault(self, idx: int, f: Any) -> Generator[simpy.Event, Any, None]:
        env = self.env
        det = self.spec.faults.detection_delay_s * 1000.0
        yield env.timeout(f.at_s * 1000.0)
        self._active.append((idx, f))
        self._apply_real()
        if f.kind == "region_outage":  # the region's processes and caches are gone
            r = f.target
            if r in self.l1:
                self.l1[r] = [self._cache(self.spec.caches.l1) for _ in self.l1[r]]
            for d in (self.l2, self.l3):
                if r in d:
                    d[r] = self._cache(getattr(self.spec.caches, "l2" if d is self.l2 else "regional"))
        env.process(self._learn(idx, f, det, True))
        yield env.timeout(f.duration_s * 1000.0)
        self._active.remove((idx, f))
        self._apply_real()
        env.process(self._learn(idx, f, det, False))

    def _learn(self, idx: int, f: Any, delay_ms: float, down: bool) -> Generator[simpy.Event, Any, None]:
        if f.kind == "latency_spike":
            return
        yield self.env.timeout(delay_ms)
        if down:
            self._known_active.append((idx, f))
        else:
            self._known_active.remove((idx, f))
        nodes = {f2.target for _, f2 in self._known_active if f2.kind == "node_crash"}
        regs = {f2.target for _, f2 in self._known_active if f2.kind == "region_outage"}
        self.known = Health(frozenset(nodes), frozenset(regs))
        self.known_partitions = frozenset(frozenset(f2.between) for _, f2 in self._known_active
                                          if f2.kind == "partition")
        self._new_epoch()

    def _apply_real(self) -> None:
        self._plans.clear()
        act = [f for _, f in self._active]
        self.down_nodes = {f.target for f in act if f.kind == "node_crash"}
        self.down_regions = {f.target for f in act if f.kind == "region_outage"}
        self.partitions = {frozenset(f.between) for f in act if f.kind == "partition"}
        spike: dict[str, float] = {}
        for f in act:
            if f.kind == "latency_spike":
                spike[f.target] = spike.get(f.target, 0.0) + f.extra_ms
        self.spike = spike

    # ------------------------------------------------------------------ running
    def run(self, on_second: Any = None) -> None:
        """Run the simulation to the end of the arrivals, then drain in-flight requests.

        Args:
            on_second: called with the simulated second after each simulated second
                (progress bars); ``None`` for no callback.

        The cyclic garbage collector is paused while the simulation runs: requests form
        no reference cycles (they are freed by reference counting), and collector passes
        over the large route and cache tables only cost time.
        """
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._run(on_second)
        finally:
            if was_enabled:
                gc.enable()

    def _run(self, on_second: Any) -> None:
        env = self.env
        chain = _Arrivals(self._arrival_tuples())
        chain.pending = next(chain.it, None)
        if chain.pending is not None:
            self._wake(chain, chain.pending[0], self._cb_arrival)
        for i, f in enumerate(self.spec.faults.events):
            env.process(self._fault(i, f))
        sec = 0
        end_s = int(self.duration_ms // 1000.0)
        while sec < end_s:
            sec += 1
            env.run(until=sec * 1000.0)
            if on_second is not None:
                on_second(sec)
        if self.duration_ms > env.now:
            env.run(until=self.duration_ms)
        # drain: requests in flight finish; faults still scheduled do not matter any more
        horizon = self.duration_ms + 10 * self.opt.timeout_ms
        env.run(until=horizon)
        self._flush_done()
