"""The discrete-event engine: the whole topology on SimPy, with the real routing objects.

The engine does not re-implement the system. Every request asks the same
:class:`~geoshard.cluster.routing.Router` the deployment uses for its entry region and
replicas, looks its real key up in the same cache policies
(:func:`geoshard.storage.cache.make_policy`), and every store, cache fill and
processing step of personal data is audited with the same
:class:`~geoshard.regions.residency.ResidencyPolicy`. Only time and I/O are replaced:
queues are SimPy resources, networks and caches are sampled delays.

Clock unit: milliseconds (``env.now``). Cache TTLs get seconds (``now / 1000``).

Lean path (few SimPy events per request): pure delays (RTTs, cache service times, the
integrity check) are accumulated and paid in one ``timeout`` just before the next
queue; a request costs ``2 + 3 x (queues visited)`` events.

Semantics worth knowing:

* Routes are memoised per (user, data class) and entry regions per (client region,
  jurisdiction, data class); the memo is cleared whenever the router's view of health
  changes (a *health epoch*).
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

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from geoshard.cluster.routing import Health, Router
from geoshard.errors import NoHealthyReplicaError, ResidencyError
from geoshard.spec import REQUEST_TYPES, STAGES, Spec
from geoshard.storage.cache import CachePolicy, make_policy

from .dists import Sampler
from .metrics import LogHistogram, bucket
from .workload import ArrivalStream

__all__ = ["CACHE_LEVELS", "EngineOptions", "Pool", "Simulation"]

CACHE_LEVELS: tuple[str, ...] = ("l1", "l2", "regional")
_FR, _REC, _WR = 0, 1, 2  # indices into REQUEST_TYPES
_FAIL = -1.0


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

    Attributes:
        name: ``<region>/api``, ``<region>/hot-<i>`` or ``<region>/warm``.
        region: where it runs.
        res: the SimPy resource.
        service: its service-time sampler (ms).
        busy_ms, wait_ms, grants, max_queue: measured after warm-up.
    """

    __slots__ = ("name", "region", "res", "capacity", "service", "busy_ms", "wait_ms",
                 "grants", "max_queue", "spill_at")

    def __init__(self, env: simpy.Environment, name: str, region: str, capacity: int,
                 service: Sampler, spill_at: float = float("inf")) -> None:
        self.name, self.region, self.capacity = name, region, capacity
        self.res = simpy.Resource(env, capacity=capacity)
        self.service = service
        self.busy_ms = 0.0
        self.wait_ms = 0.0
        self.grants = 0
        self.max_queue = 0
        self.spill_at = spill_at


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
        for r, reg in spec.regions.items():
            cap = reg.api.servers * reg.api.workers
            self.api[r] = Pool(env, f"{r}/api", r, cap, Sampler(reg.api.service_time, next(self._rngs)),
                               spill_at=o.spill_queue_factor * cap)
            self.warm[r] = Pool(env, f"{r}/warm", r, reg.warm.nodes * reg.warm.workers,
                                Sampler(reg.warm.service_time, next(self._rngs)))
            for node in reg.hot_node_names(r):
                self.hot[node] = Pool(env, node, r, reg.hot.workers,
                                      Sampler(reg.hot.service_time, next(self._rngs)))
            if c.l1:
                self.l1[r] = [self._cache(c.l1) for _ in range(reg.api.servers)]
            if c.l2:
                self.l2[r] = self._cache(c.l2)
            if c.regional:
                self.l3[r] = self._cache(c.regional)
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
        self._routes: dict[tuple[int, str, str | None], tuple[tuple[str, ...], tuple[str, ...]] | None] = {}
        self._entries: dict[tuple[str, str, str], str | None] = {}
        self._spill_cands: dict[tuple[str, str, str], list[str]] = {}
        self._store_memo: dict[tuple[str, str, str], bool] = {}
        self._audit_memo: dict[tuple[str, str, str, str], bool] = {}
        self.audit_checks = 0
        self.audit_violations = 0
        self.audit_examples: list[str] = []
        self.fault_log: list[dict[str, Any]] = []
        # metrics
        nreg, ntyp = len(self.regions), len(REQUEST_TYPES)
        self.hist = [[LogHistogram() for _ in range(nreg)] for _ in range(ntyp)]
        self.within = [[0] * nreg for _ in range(ntyp)]
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

    # ------------------------------------------------------------------ building blocks
    def _cache(self, lvl: Any) -> CachePolicy:
        kw: dict[str, Any] = {"ttl_s": lvl.ttl_s}
        if lvl.capacity_items:
            kw["capacity_items"] = lvl.capacity_items
        else:
            kw["capacity_bytes"] = lvl.capacity_bytes
        return make_policy(lvl.policy, **kw)

    def _audit(self, j: str, dc: str, region: str, purpose: str) -> bool:
        """Audit one store/fill/processing step of personal data; True when allowed."""
        self.audit_checks += 1
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
            self.audit_violations += 1
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

    def _route(self, uid: int, j: str, dc: str,
               near: str | None) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """A read route nearest ``near`` first, or (``near=None``) a write route, primary first."""
        k = (uid, dc, near)
        try:
            return self._routes[k]
        except KeyError:
            pass
        from geoshard.keys import UserKey

        try:
            rt = self.router.route(UserKey(j, uid), "write" if near is None else "read",
                                   self.known, dc, near=near)
            val: tuple[tuple[str, ...], tuple[str, ...]] | None = (rt.replicas, rt.regions)
        except NoHealthyReplicaError:
            val = None
        self._routes[k] = val
        return val

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
        self._routes.clear()
        self._entries.clear()
        self._spill_cands.clear()

    # ------------------------------------------------------------------ metrics
    def _done(self, t0: float, ri: int, ti: int, lat: float) -> None:
        b = bucket(lat)
        sec = int(t0 // 1000.0)
        self.ts_req[sec] += 1
        self.ts_hist[sec].add_bucket(b, lat)
        if t0 >= self.warm_ms:
            self.hist[ti][ri].add_bucket(b, lat)
            if lat <= self.p99_target[ti]:
                self.within[ti][ri] += 1

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

    # ------------------------------------------------------------------ processes
    def _arrivals(self) -> Generator[simpy.Event, Any, None]:
        env, proc, req = self.env, self.env.process, self._request
        timeout = env.timeout
        for batch in self.stream.batches():
            for t, ri, ti, uid, item, draw in zip(batch.t_ms, batch.region, batch.rtype,
                                                  batch.user, batch.item, batch.draw):
                dt = t - env.now
                if dt > 0:
                    yield timeout(dt)
                self.arrived += 1
                proc(req(t, ri, ti, uid, item, draw))

    def _replicate(self, pool: Pool, delay: float, t0: float) -> Generator[simpy.Event, Any, None]:
        """An asynchronous copy: travels ``delay`` ms, then queues at ``pool`` like any write."""
        if delay > 0.0:
            yield self.env.timeout(delay)
        yield from self._use(pool, t0)

    def _use(self, pool: Pool, t0: float) -> Generator[simpy.Event, Any, None]:
        """Queue for ``pool``, hold a server for one service time, release it."""
        env = self.env
        res = pool.res
        req = res.request()
        q = len(res.queue)
        if q > pool.max_queue and t0 >= self.warm_ms:
            pool.max_queue = q
        t_req = env.now
        yield req
        s = pool.service()
        if t0 >= self.warm_ms:
            pool.wait_ms += env.now - t_req
            pool.busy_ms += s
            pool.grants += 1
        if s > 0.0:
            yield env.timeout(s)
        res.release(req)

    def _request(self, t0: float, ri: int, ti: int, uid: int, item: int,
                 draw: int) -> Generator[simpy.Event, Any, None]:
        env = self.env
        creg = self.regions[ri]
        j = self.jur[creg]
        dc = "interactions" if ti == _WR else "user_features"
        entry = self._entry(creg, j, dc, uid)
        if entry is None:
            self._fail(t0, ri, ti, "no_region")
            return
        api = self.api[entry]
        if len(api.res.queue) > api.spill_at:
            alt = None
            for r in self._candidates(creg, j, dc):
                if r != entry and not self._known_cut(creg, r) and \
                        len(self.api[r].res.queue) <= self.api[r].spill_at:
                    alt = r
                    break
            if alt is not None:
                entry, api = alt, self.api[alt]
                if t0 >= self.warm_ms:
                    self.counts.spilled += 1
            elif len(api.res.queue) > self.opt.shed_queue:
                self._fail(t0, ri, ti, "shed")
                return
        if entry in self.down_regions or self._cut(creg, entry):
            yield env.timeout(self.opt.timeout_ms)
            self._fail(t0, ri, ti, "stale")
            return
        # one leg of the client's round trip (client RTT + inter-region RTT when the entry
        # is not the client's region); the other leg is paid when the response leaves
        leg = 0.5 * (self.client_ms + (self._hop(creg, entry) if creg != entry else
                                       (self.spike.get(entry, 0.0) if self.spike else 0.0)))
        self._audit(j, dc, entry, "process")
        if t0 >= self.warm_ms:
            k = (creg, entry)
            self.served_by[k] = self.served_by.get(k, 0) + 1
        if leg > 0.0:
            yield env.timeout(leg)
        yield from self._use(api, t0)
        key = f"{j}:{uid}"
        pending = 0.0
        if ti == _FR:
            pending = yield from self._fetch(t0, j, uid, key, entry, draw, 0.0, False)
            if pending == _FAIL:
                self._fail(t0, ri, ti, "stale")
                return None
            self._done(t0, ri, ti, env.now + pending + leg - t0)
        elif ti == _WR:
            pending = yield from self._write(t0, j, uid, key, entry, draw, 0.0)
            if pending == _FAIL:
                self._fail(t0, ri, ti, "stale")
                return None
            self._done(t0, ri, ti, env.now + pending + leg - t0)
        else:
            credit = 0.0
            degraded = False
            budget = self.budget
            # sourcing: the user's features (personal), cached or from the hot tier
            v0 = env.now + pending
            pending = yield from self._fetch(t0, j, uid, key, entry, draw, pending, True)
            if pending < 0.0:  # dead node: the stage gives up at its budget
                pending = max(0.0, v0 + budget["sourcing"] - env.now)
                degraded = True
            d = env.now + pending - v0
            if d > budget["sourcing"]:
                credit += d - budget["sourcing"]
                self._degrade("sourcing", t0)
                degraded = True
            # recall: ANN search on the entry region's warm pool (item shard of the item)
            self._audit(j, "user_embeddings", entry, "process")
            v0 = env.now + pending
            if pending > 0.0:
                yield env.timeout(pending)
            yield from self._use(self.warm[entry], t0)
            pending = 0.0
            d = env.now - v0
            if d > budget["recall"]:
                credit += d - budget["recall"]
                self._degrade("recall", t0)
                degraded = True
            # integrity: availability, residency, dedupe, rules (a small constant)
            pending += self.opt.integrity_ms
            if self.opt.integrity_ms > budget["integrity"]:
                credit += self.opt.integrity_ms - budget["integrity"]
                self._degrade("integrity", t0)
                degraded = True
            # precision: ranking on the API's CPU
            v0 = env.now + pending
            if pending > 0.0:
                yield env.timeout(pending)
            yield from self._use(api, t0)
            d = env.now - v0
            if d > budget["precision"]:
                credit += d - budget["precision"]
                self._degrade("precision", t0)
                degraded = True
            if degraded and t0 >= self.warm_ms:
                self.counts.degraded += 1
            # the response travels back to the client
            self._done(t0, ri, ti, env.now + leg - t0 - credit)
        return None

    def _degrade(self, stage: str, t0: float) -> None:
        if t0 >= self.warm_ms:
            self.counts.degraded_by_stage[stage] += 1

    def _fetch(self, t0: float, j: str, uid: int, key: str, entry: str, draw: int,
               pending: float, in_pipeline: bool) -> Generator[simpy.Event, Any, float]:
        """User features: L1 -> L2 -> regional -> hot primary; fill caches on the way back.

        Returns the pending (not yet slept) delay, or ``_FAIL`` after a dead hop.
        """
        env = self.env
        now_s = env.now / 1000.0
        measuring = t0 >= self.warm_ms
        sec = int(t0 // 1000.0)
        self.ts_lookups[sec] += 1
        hits, misses = self.cache_hits, self.cache_misses
        l1s = self.l1.get(entry)
        l1 = l1s[draw % len(l1s)] if l1s else None
        if l1 is not None:
            pending += self.l1_ms()  # type: ignore[misc]
            if l1.lookup(key, now_s):
                if measuring:
                    hits["l1"] += 1
                self.ts_hits[sec] += 1
                return pending
            if measuring:
                misses["l1"] += 1
        intra = self.rtt[(entry, entry)]
        l2 = self.l2.get(entry)
        found = None
        if l2 is not None:
            pending += intra + self.l2_ms()  # type: ignore[misc]
            if l2.lookup(key, now_s):
                found = "l2"
            if measuring:
                if found:
                    hits["l2"] += 1
                else:
                    misses["l2"] += 1
        l3 = self.l3.get(entry)
        if found is None and l3 is not None:
            pending += intra + self.l3_ms()  # type: ignore[misc]
            if l3.lookup(key, now_s):
                found = "regional"
            if measuring:
                if found:
                    hits["regional"] += 1
                else:
                    misses["regional"] += 1
        if found is None:
            route = self._route(uid, j, "user_features", entry)
            if route is None:
                return _FAIL
            node = nreg = None
            for n, r in zip(*route):
                if not self._known_cut(entry, r):
                    node, nreg = n, r
                    break
            if node is None or nreg is None:
                return _FAIL
            if node in self.down_nodes or nreg in self.down_regions or self._cut(entry, nreg):
                wait = self.opt.timeout_ms if not in_pipeline else min(
                    self.opt.timeout_ms, self.budget["sourcing"])
                yield env.timeout(pending + wait)
                return _FAIL
            self._audit(j, "user_features", nreg, "store")
            hop = self._hop(entry, nreg)
            pool = self.hot[node]
            if pool.service.constant == 0.0:
                # a zero-time server never queues: skip its three events (exact)
                pending += hop
            else:
                if pending + hop > 0.0:
                    yield env.timeout(pending + hop * 0.5)
                yield from self._use(pool, t0)
                pending = hop * 0.5
            now_s = env.now / 1000.0
        else:
            self.ts_hits[sec] += 1
        # fill the levels above the one that answered, in the entry region, if allowed
        if self._may_store(j, "user_features", entry):
            vb = self.value_bytes
            if found is None and l3 is not None and self._audit(j, "user_features", entry, "store"):
                l3.admit(key, vb, now_s)
            if found in (None, "regional") and l2 is not None and \
                    self._audit(j, "user_features", entry, "store"):
                l2.admit(key, vb, now_s)
            if l1 is not None and self._audit(j, "user_features", entry, "store"):
                l1.admit(key, vb, now_s)
        return pending

    def _write(self, t0: float, j: str, uid: int, key: str, entry: str, draw: int,
               pending: float) -> Generator[simpy.Event, Any, float]:
        """An interaction write: primary + its in-region Redis replica (``WAIT 1``), ring
        replicas in other regions asynchronously."""
        env = self.env
        route = self._route(uid, j, "interactions", None)
        if route is None:
            return _FAIL
        targets = [(n, r) for n, r in zip(*route) if not self._known_cut(entry, r)]
        if not targets:
            return _FAIL
        node, preg = targets[0]
        if node in self.down_nodes or preg in self.down_regions or self._cut(entry, preg):
            yield env.timeout(pending + self.opt.timeout_ms)
            return _FAIL
        self._audit(j, "interactions", preg, "store")
        yield env.timeout(pending + self._hop(entry, preg) * 0.5)
        yield from self._use(self.hot[node], t0)
        pending = 0.0
        rep_ms = self.hot_replica_ms[preg]
        if rep_ms is not None:  # WAIT 1: the in-region replica confirms before the ack
            self._audit(j, "interactions", preg, "store")
            pending = self.rtt[(preg, preg)] + rep_ms()
        pending += self._hop(preg, entry) * 0.5
        for n, r in zip(*route):  # the ring replicas elsewhere: asynchronous, off the latency
            if n == node or n in self.down_nodes or r in self.down_regions or self._cut(preg, r):
                continue
            self._audit(j, "interactions", r, "store")
            env.process(self._replicate(self.hot[n], self._hop(preg, r) * 0.5, t0))
        # the write changes the user's features: drop them from the shared caches and
        # from the L1 of the server that took the write (other L1s expire by TTL)
        l2, l3 = self.l2, self.l3
        for r in self.policy.allowed_regions(j, "user_features", "store"):
            if r in l2:
                l2[r].invalidate(key)
            if r in l3:
                l3[r].invalidate(key)
        l1s = self.l1.get(entry)
        if l1s:
            l1s[draw % len(l1s)].invalidate(key)
        return pending

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
        """
        env = self.env
        env.process(self._arrivals())
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
