"""The discrete-event engine: the topology on SimPy, with the real routing and cache code.

The engine does not re-implement the system. Every request is planned by the same
:class:`~geoshard.cluster.routing.Router` the deployment uses (entry region that may
process every data class the request touches, replica, failover), walks its real key
through the same cache policies with the same cache walk
(:mod:`geoshard.storage.cache.walk`: lookup order, fill above, residency admit,
invalidation), and every store, fill and processing step of personal data is audited
with the same :class:`~geoshard.regions.residency.ResidencyPolicy`. Only time and I/O are
replaced: queues are FIFO pools (:mod:`geoshard.sim.pools`), networks and caches are
sampled delays. Clock unit: milliseconds; cache TTLs get seconds.

A request is a small callback state machine (:class:`_Req`) that is itself the event it
waits on, on SimPy's heap (:mod:`geoshard.sim.simpy_adapter`):

* **arrival**: each region's arrivals are drawn in chunks (:mod:`geoshard.sim.workload`)
  that never straddle a change of rate or health (:mod:`geoshard.sim.faults`), so a
  chunk is planned at once: entry region per request type, routes for all its users
  (one vectorised ring lookup), the client's network leg. Each request is pushed
  straight to its API join; cache-only requests of the slice go to a side queue.
* **API join** (event): spill to the nearest other allowed region when the API queue is
  longer than ``spill_queue_factor x workers``, shed (429) when none has room and the
  queue passes ``shed_queue``; else the request joins the API pool.
* **API service end** (event): the cache walk (L1 of the request's API server, L2,
  regional), each level a pure delay; on a hit the levels above are filled, on a miss
  every level is filled at once (a concurrent miss of the same key therefore hits: a
  single-flight approximation) and the read goes to the replica nearest the entry. A
  feature read's hot-tier read is a deferred join (no event: its end only gives the
  latency); a recommend's is an event, then recall (warm pool, event), integrity (a
  constant), precision (API pool, deferred). A write invalidates the user's key in the
  shared levels of every region allowed to hold it and in the L1 that took it, then its
  primary (deferred) acks after its in-region Redis replica (WAIT 1); the copies on the
  other ring replicas are deferred joins that load those nodes, off the latency.
* **Stage budgets** (recommend) are checked post hoc: a stage over budget labels the
  answer degraded and counts the stage as its budget (the client got the fallback at
  the deadline); the abandoned work still loads its pool.
* **Faults** change the real state at once and the router's belief
  ``detection_delay_s`` later; a request that meets a dead hop or a cut link in between
  fails after ``timeout_ms`` (``stale_route_errors``); a read or write whose user has no
  allowed replica the router believes live and reachable fails with the residency reason
  (``no_allowed_region``); a recommend whose sourcing fails degrades. A region outage
  empties the region's caches.

Events per request: 2 for a feature read or a write, 3 for a recommend (4 when its
features miss every cache).
"""

from __future__ import annotations

import gc
import zlib
from collections.abc import Callable, Iterator
from heapq import heappush
from itertools import count
from typing import Any

import numpy as np
import simpy

from geoshard.cluster.routing import REQUEST_DATA_CLASSES, Health, Router
from geoshard.errors import NoHealthyReplicaError, ResidencyError
from geoshard.spec import REQUEST_TYPES, STAGES, CacheLevel, Spec
from geoshard.storage.cache import CachePolicy, make_policy
from geoshard.storage.cache import walk as cache_walk

from .calibrate import calibrate
from .collect import Collector, SimResults
from .dists import Sampler
from .faults import RealState, Timeline
from .options import EngineOptions
from .pools import Pool
from .population import Population
from .simpy_adapter import URGENT, EventLoop
from .warm import CacheModel, KeyInfo, PopularityClasses
from .workload import RegionArrivals, mix_vector, rate_segments

__all__ = ["EngineOptions", "Simulation", "populations", "stream"]

_FR, _REC, _WR = 0, 1, 2  # indices into REQUEST_TYPES
# answers and waits are buffered and binned in batches of at least this many (a few MB)
_FLUSH_ROWS = 32768
_OPS = ("read", "read", "write")
_DC = ("user_features", "user_features", "interactions")


def stream(seed: int, name: str) -> np.random.Generator:
    """The random stream ``name`` of a run: a fixed function of (seed, name).

    Every pool, region and sampler draws from its own stream, so adding a pool or
    simulating regions apart does not change the draws of the others.
    """
    return np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()),))
    )


def populations(spec: Spec, scale: float, seed: int) -> dict[str, Population]:
    """The user population of every jurisdiction that has users, with the slice."""
    w = spec.workload
    out: dict[str, Population] = {}
    off = 0
    # the head keeps every hot node's sampled load within 1 %: sized for the largest ring
    nodes = max((r.hot.nodes for r in spec.regions.values()), default=1)
    for j in sorted(spec.jurisdictions):
        n = round(w.users * w.users_by_jurisdiction.get(j, 0.0))
        if n > 0:
            phase = float(stream(seed, f"phase:{j}").random())
            out[j] = Population(
                j, n, w.zipf.users, offset=off, scale=scale, phase=phase, nodes=nodes
            )
        off += n
    return out


class _Req:
    """One request in flight: its state, and the event it currently waits on.

    ``ep`` is the health epoch its target was planned in (-1 after a spill: re-plan);
    ``credit`` and ``degraded`` exist only on recommends (set when sourcing starts).
    """

    __slots__ = (
        "callbacks",
        "cls",
        "credit",
        "degraded",
        "draw",
        "ep",
        "head",
        "hop",
        "plan",
        "ri",
        "t0",
        "tgt",
        "ti",
        "tj",
        "uid",
        "v0",
    )
    _ok = True
    callbacks: list[Any] | None
    t0: float
    ri: int
    ti: int
    uid: int
    draw: int
    cls: int
    head: bool
    plan: _Plan
    tgt: Any
    ep: int
    credit: float
    degraded: bool
    hop: float
    tj: float
    v0: float

    def __init__(
        self,
        t0: float,
        ri: int,
        ti: int,
        uid: int,
        draw: int,
        cls: int,
        head: bool,
        plan: _Plan,
        tgt: Any,
        ep: int,
        callbacks: list[Any],
    ) -> None:
        self.t0, self.ri, self.ti, self.uid, self.draw, self.cls = t0, ri, ti, uid, draw, cls
        self.head = head
        self.plan, self.tgt, self.ep, self.callbacks = plan, tgt, ep, callbacks


class _Arrivals:
    """The event that draws a region's next chunk of arrivals."""

    __slots__ = ("_ok", "callbacks", "ri", "src")
    callbacks: list[Any] | None

    def __init__(self, ri: int, src: RegionArrivals) -> None:
        self._ok = True
        self.ri, self.src = ri, src


class _Tick:
    __slots__ = ("_ok", "callbacks", "i")
    callbacks: list[Any] | None

    def __init__(self, i: int) -> None:
        self._ok = True
        self.i = i


class _Plan:
    """What every request of one (client region, type) does under one state of health."""

    __slots__ = (
        "api",
        "classes",
        "creg",
        "dc",
        "delays",
        "entry",
        "fill_ok",
        "head_hits",
        "inval",
        "j",
        "l1",
        "leg",
        "op",
        "proc_ok",
        "ri",
        "routes",
        "served",
        "skey",
        "stacks",
        "stale",
        "store_ok",
        "ti",
        "tlist",
        "warm",
    )
    api: Pool
    classes: tuple[str, ...]
    creg: str
    dc: str
    delays: list[Any]  # per level: a constant (float) or a Sampler
    fill_ok: bool
    head_hits: list[list[float] | None] | None
    inval: list[Any]
    j: str
    l1: bool
    leg: float
    op: str
    proc_ok: bool
    ri: int
    skey: tuple[str, str]
    stacks: list[list[Any]]
    store_ok: tuple[bool, ...]
    ti: int
    warm: Pool

    def __init__(self) -> None:
        self.served = 0  # measured requests that joined its entry's API (served_by)
        self.entry: str | None = None
        self.stale = False
        self.routes: list[Any] | None = None
        self.tlist: list[Any] = []


class Simulation:
    """One simulation run of a spec (or of an independent part of it).

    Args:
        spec: the spec.
        seed: the seed of every random stream.
        duration_s: simulated seconds of arrivals.
        warmup_s: measurements start here (the time series covers the whole run).
        scale: the slice ``R`` in (0, 1] (see :mod:`geoshard.sim.population`).
        options: engine knobs.
        regions: simulate only these regions (a part closed under routing, see
            :func:`geoshard.sim.parallel.components`); None = all.
        segment: 0 for a run, or k > 0 for the k-th time segment of a longer run, which
            draws its own random streams (:mod:`geoshard.sim.parallel`).
        lead_s: the first seconds are an unmeasured lead-in (a segment's or a slice's):
            their arrivals are simulated but not counted in ``arrived``.

    Examples:
        >>> from geoshard.spec import load_spec
        >>> sim = Simulation(load_spec("examples/local.yaml"), seed=1, duration_s=5)  # doctest: +SKIP
        >>> sim.run().arrived > 0                                                 # doctest: +SKIP
        True
    """

    def __init__(
        self,
        spec: Spec,
        seed: int,
        duration_s: float,
        warmup_s: float = 0.0,
        scale: float = 1.0,
        options: EngineOptions | None = None,
        regions: set[str] | None = None,
        segment: int = 0,
        lead_s: float = 0.0,
    ) -> None:
        self.spec, self.seed, self.scale = spec, seed, scale
        self.lead_ms = lead_s * 1000.0
        self.segment = segment
        self.opt = o = options or EngineOptions()
        self.duration_ms = duration_s * 1000.0
        self.warm_ms = warmup_s * 1000.0
        self.env = simpy.Environment()
        self.loop = EventLoop(self.env)
        self.router = Router.from_spec(spec)
        self.policy = self.router.residency
        net = self.router.network
        self.regions = list(spec.regions)
        self.part = [r for r in self.regions if regions is None or r in regions]
        self.jur = {r: spec.regions[r].jurisdiction for r in self.regions}
        self.rtt = {(a, b): net.rtt_ms(a, b) for a in self.regions for b in self.regions}
        self.client_ms = net.client_ms
        self.timeline = Timeline.from_spec(spec)
        self.si = 0
        self.real: RealState = self.timeline.real[0]
        self.known: Health = self.timeline.known[0]
        self.ep = 0
        self.pops = populations(spec, scale, seed)
        # per-second pool demand covers the run and its drain (joins after are not binned)
        seconds = max(1, int(np.ceil(duration_s + 10 * o.timeout_ms / 1000.0)) + 1)
        self._seq: Iterator[int] = count()
        end = self.duration_ms
        self.api: dict[str, Pool] = {}
        self.warm: dict[str, Pool] = {}
        self.hot: dict[str, Pool] = {}
        for r in self.part:
            reg = spec.regions[r]
            cap = reg.api.servers * reg.api.workers

            def pool(
                name: str,
                kind: str,
                capacity: int,
                service: Sampler,
                spill_at: float = float("inf"),
                region: str = r,
            ) -> Pool:
                return Pool(
                    name,
                    region,
                    kind,
                    capacity,
                    service,
                    scale=scale,
                    spill_at=spill_at,
                    warm_ms=self.warm_ms,
                    until=end,
                    seconds=seconds,
                    seq=self._seq,
                )

            self.api[r] = pool(
                f"{r}/api",
                "api",
                cap,
                Sampler(reg.api.service_time, self._rng(f"pool:{r}/api")),
                spill_at=o.spill_queue_factor * cap,
            )
            self.warm[r] = pool(
                f"{r}/warm",
                "warm",
                reg.warm.nodes * reg.warm.workers,
                Sampler(reg.warm.service_time, self._rng(f"pool:{r}/warm")),
            )
            self.api[r].upstream = self.warm[r]  # recall ends start precision steps
            for node in reg.hot_node_names(r):
                self.hot[node] = pool(
                    node,
                    "hot",
                    reg.hot.workers,
                    Sampler(reg.hot.service_time, self._rng(f"pool:{node}")),
                )
        c = spec.caches
        self.levels: list[tuple[str, CacheLevel]] = [
            (n, lvl)
            for n, lvl in (("l1", c.l1), ("l2", c.l2), ("regional", c.regional))
            if lvl is not None
        ]
        # a level looked up is a pure delay: its service time, plus the intra-region hop
        # for the shared levels (L1 is in-process)
        self.level_ms = {
            n: {
                r: Sampler(
                    lvl.service_time,
                    self._rng(f"cache:{r}/{n}"),
                    offset_ms=0.0 if n == "l1" else self.rtt[(r, r)],
                )
                for r in self.part
            }
            for n, lvl in self.levels
        }
        self.value_bytes = spec.workload.value_bytes
        self.models: dict[str, CacheModel] = {}
        # the warm start's popularity classes (one per jurisdiction, shared by every
        # region's model) and the class of the key being walked (set from the request)
        self.classes = (
            {j: PopularityClasses.of(p) for j, p in self.pops.items()}
            if o.warm_start or scale < 1
            else {}
        )
        self.key_info = KeyInfo()
        self.caches: dict[str, dict[str, list[Any]]] = {}
        self.calibration: dict[str, Any] = {}
        if o.warm_start or scale < 1:
            for r in self.part:
                m = self._model(r)
                if m is not None:
                    self.models[r] = m
        if o.warm_start and o.calibrate and self.models:
            self.calibration = calibrate(self, o.calibration_requests or self._budget())
        for r in self.part:
            self.caches[r] = self._build_caches(r, warm=o.warm_start)
        self._head_rng = self._rng("head-caches")
        self._head_buf: list[float] = []
        self._head_u = self._head_buf.pop

        self.rep_ms: dict[str, Sampler | None] = {
            r: (
                Sampler(spec.regions[r].hot.service_time, self._rng(f"wait1:{r}"))
                if spec.regions[r].hot.replicas >= 1
                else None
            )
            for r in self.part
        }
        rec = spec.slo.latency.get("recommend")
        self.budget = {
            s: (spec.slo.stage_budgets.get(s, 1.0) * rec.p99_ms if rec else float("inf"))
            for s in STAGES
        }
        lat = spec.slo.latency
        self.collector = Collector(
            self.regions,
            duration_s,
            self.warm_ms,
            [lat[t].p99_ms if t in lat else float("inf") for t in REQUEST_TYPES],
            [bool(lat[t].accept_degraded) if t in lat else False for t in REQUEST_TYPES],
        )
        self.walks = [0] * (len(self.levels) + 1)  # index hit + 1 (0: missed everywhere)
        self.refusals = 0
        self.audit_checks = 0
        self.audit_violations = 0
        self.audit_examples: list[str] = []
        self._audit_memo: dict[tuple[str, str, str, str], bool] = {}
        self.served_by: dict[tuple[str, str], int] = {}
        self.arrived = 0
        self._plans: dict[tuple[int, int, int, str | None], _Plan] = {}
        self._heap = self.loop.heap
        self._eid = self.loop.next_id
        self._faulty = False
        self._stretch = 1.0 / scale
        self._cb_join: list[Callable[[Any], None]] = [self._join_api]
        self._cb_hot_rec: list[Callable[[Any], None]] = [self._hot_rec]
        self._cb_arrivals: list[Callable[[Any], None]] = [self._next_chunk]
        self._cb_change: list[Callable[[Any], None]] = [self._change]
        mix = mix_vector(spec)
        segs = rate_segments(spec, self.duration_ms, self.timeline.times)
        self.sources: list[RegionArrivals] = []
        for ri, r in enumerate(self.regions):
            j = self.jur[r]
            if r in self.part and j in self.pops:
                src = RegionArrivals(r, self.pops[j], segs, mix, self._rng(f"arrivals:{r}"))
                self.sources.append(src)
                self.loop.schedule(_Arrivals(ri, src), 0.0, self._cb_arrivals)
        self.silent_regions = [r for r in self.part if self.jur[r] not in self.pops]
        for i, t in enumerate(self.timeline.times[1:], start=1):
            self.loop.schedule(_Tick(i), t, self._cb_change, URGENT)

    # ------------------------------------------------------------------ building
    def _policy(self, lvl: CacheLevel, capacity: float) -> CachePolicy:
        if lvl.capacity_items:
            return make_policy(lvl.policy, capacity_items=max(1, round(capacity)), ttl_s=lvl.ttl_s)
        return make_policy(
            lvl.policy, capacity_bytes=max(1, round(capacity * self.value_bytes)), ttl_s=lvl.ttl_s
        )

    def _model(self, region: str) -> CacheModel | None:
        """The steady-state model of a region's caches, from the rates at time 0."""
        spec = self.spec
        segs = rate_segments(spec, max(self.duration_ms, 1.0))
        rates = segs[0][2]
        mix = mix_vector(spec)
        read: dict[str, float] = {}
        write: dict[str, float] = {}
        inval: dict[str, float] = {}
        known = self.timeline.known[0]
        for c in self.regions:
            j = self.jur[c]
            if j not in self.pops:
                continue
            lam = rates.get(c, 0.0) * 1000.0
            for ti in range(3):
                cands = self.router.entry_candidates(
                    c, j, REQUEST_DATA_CLASSES[REQUEST_TYPES[ti]], known
                )
                if not cands:
                    continue
                if ti == _WR:
                    inval[j] = inval.get(j, 0.0) + lam * mix[ti]
                    if cands[0] == region:
                        write[j] = write.get(j, 0.0) + lam * mix[ti]
                elif cands[0] == region:
                    read[j] = read.get(j, 0.0) + lam * mix[ti]
        pops = {
            j: p
            for j, p in self.pops.items()
            if read.get(j, 0.0) > 0 and self.policy.is_allowed(j, "user_features", region, "store")
        }
        if not pops:
            return None
        reg = spec.regions[region]
        levels = []
        for name, lvl in self.levels:
            cap = (
                lvl.capacity_items
                if lvl.capacity_items
                else (lvl.capacity_bytes or 0) / self.value_bytes
            )
            levels.append((name, lvl.policy, float(cap), lvl.ttl_s))
        return CacheModel(
            pops,
            read,
            write,
            inval,
            reg.api.servers,
            levels,
            self.duration_ms / 1000.0,
            self.classes,
            self.key_info,
        )

    def _build_caches(self, region: str, warm: bool) -> dict[str, list[Any]]:
        """A region's cache instances: one L1 per API server, one L2, one regional level."""
        model = self.models.get(region)
        out: dict[str, list[Any]] = {}
        servers = self.spec.regions[region].api.servers
        keys = sum(c.pop.tail_keys for c in model.classes.values()) if model is not None else 0
        for name, lvl in self.levels:
            full = (
                lvl.capacity_items
                if lvl.capacity_items
                else (lvl.capacity_bytes or 0) / self.value_bytes
            )
            lm = model.levels[name] if model is not None else None
            cap = lm.slice_capacity(self.scale) if lm else max(1.0, self.scale * full)
            n = servers if name == "l1" else 1
            insts = []
            for i in range(n):
                policy = self._policy(lvl, cap)
                if warm and model is not None:
                    unit = 1 if lvl.capacity_items else self.value_bytes
                    salt = zlib.crc32(f"{self.seed}:{region}/{name}/{i}".encode())
                    policy.start_warm(
                        model.oracle(name, salt),
                        int(min(cap, keys) * unit),
                        unit,
                        clock=self._now_s,
                    )
                insts.append(policy)
            out[name] = insts
        return out

    def _budget(self) -> int:
        """The calibration replay's request budget: twice this run's requests, bounded."""
        segs = rate_segments(self.spec, self.duration_ms)
        total = (
            sum(
                (b - a) * sum(v for r, v in rates.items() if r in self.part) for a, b, rates in segs
            )
            * self.scale
        )
        return int(min(max(2 * total, 100_000), 1_000_000))

    def _now_s(self) -> float:
        return self.env._now * 0.001

    # ------------------------------------------------------------------ residency audit
    def _audit(self, j: str, dc: str, region: str, purpose: str, n: int = 1) -> bool:
        """Audit ``n`` store or processing steps of personal data; True when allowed."""
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
                    f"t={self.loop.now / 1000:.3f}s {purpose} {j} {dc} in {region}"
                )
        return ok

    # ------------------------------------------------------------------ health changes
    def _change(self, ev: _Tick) -> None:
        """A change of the real state or of the router's belief (the fault timeline)."""
        tl = self.timeline
        self.si = ev.i
        real, known = tl.real[ev.i], tl.known[ev.i]
        for r in real.outages_starting:
            if r in self.caches:  # the region's processes and caches are gone
                self.caches[r] = self._build_caches(r, warm=False)
                self._drop_plans()
        self.real = real
        self._faulty = bool(real.health)
        if known != self.known:
            self.known = known
            self.ep += 1
        self._drop_plans()

    def _drop_plans(self) -> None:
        """Forget the plans (health changed); keep what they counted."""
        sb = self.served_by
        for p in self._plans.values():
            if p.served:
                sb[p.skey] = sb.get(p.skey, 0) + p.served
        self._plans.clear()

    def _hop(self, a: str, b: str) -> float:
        x = self.rtt[(a, b)]
        spike = self.real.spike_ms
        if spike:
            s = dict(spike)
            x += s.get(a, 0.0) + (s.get(b, 0.0) if a != b else 0.0)
        return x

    def _dead(self, node: str, region: str, entry: str) -> bool:
        """Really unreachable from ``entry`` now (down, or across a cut link)."""
        h = self.real.health
        return not h.is_up(node, region) or h.is_cut(entry, region)

    def _region_dead(self, region: str, origin: str) -> bool:
        """Region ``region`` really down, or cut off from ``origin``, now."""
        h = self.real.health
        return region in h.down_regions or h.is_cut(origin, region)

    # ------------------------------------------------------------------ plans
    def _plan(self, ri: int, ti: int, entry: str | None = None) -> _Plan:
        """The plan of (client region, type) now; ``entry`` forces a spill target."""
        key = (ri, ti, self.si, entry)
        p = self._plans.get(key)
        if p is not None:
            return p
        p = _Plan()
        creg = self.regions[ri]
        j = self.jur[creg]
        t = REQUEST_TYPES[ti]
        classes = REQUEST_DATA_CLASSES[t]
        p.ri, p.ti, p.creg, p.j, p.op, p.dc, p.classes = ri, ti, creg, j, _OPS[ti], _DC[ti], classes
        if entry is None:
            cands = self.router.entry_candidates(creg, j, classes, self.known)
            entry = cands[0] if cands else None
        p.entry = entry
        self._plans[key] = p
        if entry is None:
            return p
        real = self.real.health
        p.stale = entry in real.down_regions or real.is_cut(creg, entry) or entry not in self.api
        if p.stale:
            return p
        p.skey = (creg, entry)
        p.leg = 0.5 * (
            self.client_ms
            + (self._hop(creg, entry) if creg != entry else self.real.spike().get(entry, 0.0))
        )
        p.api, p.warm = self.api[entry], self.warm[entry]
        p.proc_ok = all(self.policy.is_allowed(j, dc, entry, "process") for dc in classes)
        cs = self.caches[entry]
        names = [n for n, _ in self.levels]
        n1 = len(cs["l1"]) if "l1" in cs else 1
        p.l1 = "l1" in cs
        p.stacks = [[cs[n][i] if n == "l1" else cs[n][0] for n in names] for i in range(n1)]
        p.delays = []
        for n in names:
            smp = self.level_ms[n][entry]
            p.delays.append(smp if smp.constant is None else float(smp.constant))
        store = self.policy.is_allowed(j, "user_features", entry, "store")
        p.store_ok = (store,) * len(names)
        p.fill_ok = store
        # the head users' per-level hit probabilities (scaled runs), by popularity class
        model = self.models.get(entry)
        p.head_hits = None
        if self.scale < 1:
            p.head_hits = [
                model.levels[n].hit0.get(j) if (model is not None and store) else None
                for n in names
            ]
        # a write invalidates the shared levels of every region that may hold the features
        inval: list[Any] = []
        for r in sorted(self.policy.allowed_regions(j, "user_features", "store")):
            if r in self.caches:
                inval.extend(x[0] for n, x in self.caches[r].items() if n != "l1")
        p.inval = inval
        return p

    def _targets(self, plan: _Plan, users: np.ndarray) -> list[Any]:
        """Per user, the target of its request under the router's current belief (see
        :meth:`_target`); None when no replica can be used."""
        op, entry = plan.op, plan.entry
        assert entry is not None
        try:
            codes, routes = self.router.route_codes(
                plan.j,
                users,
                op,  # type: ignore[arg-type]
                self.known,
                plan.dc,
                near=entry if op == "read" else None,
            )
        except NoHealthyReplicaError:
            return [None] * len(users)
        if plan.routes is not routes:
            plan.routes, plan.tlist = routes, []
        tl = plan.tlist
        while len(tl) < len(routes):
            nodes, regions = routes[len(tl)]
            tl.append(self._target(plan, nodes, regions))
        return [tl[c] for c in codes.tolist()]

    def _target(self, plan: _Plan, nodes: tuple[str, ...], regions: tuple[str, ...]) -> Any:
        """A read's ``(pool, region, node, half hop, store allowed)``; a write's ``(primary
        pool, region, node, half hop, store allowed, others)`` with ``others`` the ring
        replicas' ``(pool, region, node, half hop from the primary, store allowed)``."""
        entry = plan.entry
        assert entry is not None
        i = self.router.pick_replica(nodes, regions, entry, self.known)
        if i is None or nodes[i] not in self.hot:
            return None
        node, reg = nodes[i], regions[i]
        half = 0.5 * self._hop(entry, reg)
        ok = self.policy.is_allowed(plan.j, plan.dc, reg, "store")
        if plan.op == "read":
            return (self.hot[node], reg, node, half, ok)
        others = tuple(
            (
                self.hot[n],
                r,
                n,
                0.5 * self._hop(reg, r),
                self.policy.is_allowed(plan.j, plan.dc, r, "store"),
            )
            for k, (n, r) in enumerate(zip(nodes, regions, strict=False))
            if k != i and n in self.hot
        )
        return (self.hot[node], reg, node, half, ok, others)

    def _target_one(self, req: _Req) -> Any:
        """Re-plan one request's target (the router's view changed, or it spilled)."""
        t = self._targets(req.plan, np.array([req.uid], dtype=np.int64))[0]
        req.tgt, req.ep = t, self.ep
        return t

    def _rng(self, name: str) -> np.random.Generator:
        """The run's stream ``name``; a later time segment of a run (``segment`` > 0,
        :mod:`geoshard.sim.parallel`) draws its own (the population stays the run's)."""
        return stream(self.seed, name if not self.segment else f"{name}@{self.segment}")

    # ------------------------------------------------------------------ arrivals
    def _next_chunk(self, ev: _Arrivals) -> None:
        """Draw a region's next chunk of arrivals and push each request to its API join."""
        src = ev.src
        ch = src.next_chunk(self.opt.chunk)
        if len(ch.t_ms):
            self._dispatch(ev.ri, ch)
        if not src.done:
            self.loop.schedule(ev, ch.end_ms, self._cb_arrivals)

    def _dispatch(self, ri: int, ch: Any) -> None:
        """Plan a chunk's requests and hand them to the event loop as one stream, in the
        order they reach their entry region's API (``t0 + leg``: legs differ by type)."""
        col = self.collector
        cb_join = self._cb_join
        ep = self.ep
        ats: list[np.ndarray] = []
        reqs: list[_Req] = []
        for ti in range(3):
            sel = ch.rtype == ti
            if not sel.any():
                continue
            plan = self._plan(ri, ti)
            t0s = ch.t_ms[sel]
            self.arrived += len(t0s) if t0s[0] >= self.lead_ms else int((t0s >= self.lead_ms).sum())
            if plan.entry is None or plan.stale:
                reason = "no_region" if plan.entry is None else "stale"
                for t0 in t0s.tolist():
                    col.fail(t0, ri, ti, reason)
                continue
            users = ch.user[sel]
            tgts = self._targets(plan, users)
            leg = plan.leg
            pc = self.classes.get(plan.j)
            classes = pc.index_array(ch.rank[sel]).tolist() if pc is not None else [0] * len(t0s)
            reqs += [
                _Req(t0, ri, ti, uid, draw, c, hd, plan, tgt, ep, cb_join)
                for t0, uid, draw, c, hd, tgt in zip(
                    t0s.tolist(),
                    users.tolist(),
                    ch.draw[sel].tolist(),
                    classes,
                    ch.head[sel].tolist(),
                    tgts,
                    strict=False,
                )
            ]
            ats.append(t0s + leg)
        if not reqs:
            return
        at = np.concatenate(ats) if len(ats) > 1 else ats[0]
        order = np.argsort(at, kind="stable")
        self.loop.add_stream(at[order].tolist(), [reqs[i] for i in order.tolist()], self._join_api)

    # ------------------------------------------------------------------ the request path
    def _join_api(self, req: _Req) -> None:
        """The request reaches its entry region's API (spill or shed first if overloaded)."""
        now = self.env._now
        plan = req.plan
        if self._faulty and self._region_dead(plan.entry, plan.creg):  # type: ignore[arg-type]
            self.collector.fail(req.t0, req.ri, req.ti, "stale")
            return
        api = plan.api
        # the queue is at most the waiting plus the deferred joins: count it only then
        if (
            len(api.waiting) + len(api.deferred) > api.spill_at
            and api.queue_len(now) > api.spill_at
        ):
            if not self._spill(req, now):
                return
            plan = req.plan
            api = plan.api
        if req.t0 >= self.warm_ms:
            plan.served += 1
        if plan.proc_ok:
            self.audit_checks += 1
        else:
            self._audit(plan.j, plan.classes[0], plan.entry, "process")  # type: ignore[arg-type]
        req.tj = now  # a recommend comes back to this pool (see _fin_recall)
        # The API's hand-off runs now, timed from the request's API end: what follows it
        # is deferred joins and later events only, so no pool sees a join out of time
        # order, and a request costs one event less. The caches are read as they are when
        # the request joins the API (a millisecond early; see docs/simulator.md).
        self._api_done(req, api.join(now))

    def _spill(self, req: _Req, now: float) -> bool:
        """Move an overloaded entry's request to the nearest other region with room.

        Returns False when the request was moved, shed or failed instead of joining here.
        """
        plan = req.plan
        if req.ep >= 0:  # not spilled yet
            cands = self.router.entry_candidates(plan.creg, plan.j, plan.classes, self.known)
            for r in cands:
                if r == plan.entry or r not in self.api:
                    continue
                a = self.api[r]
                if a.queue_len(now) <= a.spill_at and not self._region_dead(r, plan.entry or r):
                    alt = self._plan(plan.ri, plan.ti, entry=r)
                    req.plan, req.tgt, req.ep = alt, None, -1
                    if req.t0 >= self.warm_ms:
                        self.collector.counts.spilled += 1
                    req.callbacks = self._cb_join
                    heappush(
                        self._heap, (now + 0.5 * self._hop(plan.entry or r, r), 1, self._eid(), req)
                    )
                    return False
        if plan.api.queue_len(now) > self.opt.shed_queue:
            self.collector.fail(req.t0, req.ri, req.ti, "shed")
            return False
        return True

    def _api_done(self, req: _Req, now: float) -> None:
        """The API hands the request on at ``now``: the cache walk, then the tier or the
        write."""
        plan = req.plan
        tgt = req.tgt
        if req.ep != self.ep:
            tgt = self._target_one(req)
        ti = req.ti
        uid = req.uid
        if ti == _WR:
            self._write(req, plan, tgt, now)
            return
        t0 = req.t0
        now_s = now * 0.001
        stacks = plan.stacks
        stack = stacks[req.draw % len(stacks)]
        if req.head:  # a head user of a scaled run: the steady-state model decides
            hit = self._head_lookup(plan, req.cls)
        else:
            ki = self.key_info
            ki.key, ki.j, ki.cls = uid, plan.j, req.cls
            hit = cache_walk.lookup(stack, uid, now_s)
        n = len(stack) if hit < 0 else hit + 1
        pending = 0.0
        ds = plan.delays
        for i in range(n):  # the levels looked up are pure delays (service + hop)
            d = ds[i]
            pending += d if d.__class__ is float else d()
        col = self.collector
        if t0 >= self.warm_ms:
            self.walks[hit + 1] += 1  # -1: a miss everywhere; i: a hit at level i
        sec = int(t0 * 0.001)
        if sec < col.seconds:
            col.ts_lookups[sec] += 1
            if hit >= 0:
                col.ts_hits[sec] += 1
        if ti == _REC:
            req.credit = 0.0
            req.degraded = False
            req.v0 = now
        if hit >= 0:
            if hit and not req.head:
                self._fill(plan, stack, uid, now_s, hit)
            if ti == _FR:
                col.done(t0, req.ri, _FR, now + pending + plan.leg - t0)
            else:
                self._rec_sourced(req, now + pending)
            return
        if tgt is None or (self._faulty and self._dead(tgt[2], tgt[1], plan.entry)):  # type: ignore[arg-type]
            if ti == _FR:  # no allowed replica left, or a dead hop (after the timeout)
                col.fail(t0, req.ri, _FR, "no_region" if tgt is None else "stale")
            else:  # sourcing gives up at its budget: no personal features
                self._degrade("sourcing", req)
                self._rec_sourced(req, now + min(self.opt.timeout_ms, self.budget["sourcing"]))
            return
        if not req.head:
            self._fill(plan, stack, uid, now_s, -1)
        if tgt[4]:
            self.audit_checks += 1
        else:
            self._audit(plan.j, "user_features", tgt[1], "store")
        half = tgt[3]
        req.hop = half  # the way back from the replica
        if ti == _FR:
            tgt[0].defer(now + pending + half, req, self._fin_fr)
        else:
            req.callbacks = self._cb_hot_rec
            heappush(self._heap, (now + pending + half, 1, self._eid(), req))

    def _head_lookup(self, plan: _Plan, cls: int) -> int:
        """The cache walk of a head user (scaled runs): level by level, a hit with the
        steady-state model's probability for a lookup reaching that level (the
        filtered-stream model, :mod:`geoshard.sim.warm`); -1 when every level misses."""
        hits = plan.head_hits
        if hits is None:
            return -1
        u = self._head_u
        for i, h in enumerate(hits):
            p = h[cls] if h is not None else 0.0
            try:
                x = u()
            except IndexError:
                self._head_refill()
                x = u()
            if x < p:
                return i
        return -1

    def _head_refill(self) -> None:
        self._head_buf.extend(self._head_rng.random(4096).tolist())

    def _fill(self, plan: _Plan, stack: list[Any], uid: int, now_s: float, hit: int) -> int:
        """Fill the levels above ``hit`` (all when -1); the refused levels' bitmask."""
        refused = cache_walk.fill(stack, uid, self.value_bytes, now_s, hit, plan.store_ok)
        if plan.fill_ok:
            self.audit_checks += hit if hit >= 0 else len(stack)
        elif refused:
            self.refusals += bin(refused).count("1")
        return refused

    def _invalidate(self, plan: _Plan, stack: list[Any], uid: int) -> None:
        """A write: drop the key from the shared levels of every region that may hold it,
        and from the L1 of the API server that took the write (other L1s expire)."""
        cache_walk.invalidate(plan.inval, uid)
        if plan.l1 and stack:
            stack[0].invalidate(uid)

    def serve(
        self,
        client_region: str,
        request_type: str,
        user_id: int,
        server: int = 0,
        now_s: float = 0.0,
    ) -> tuple[str | None, str | None, int | None, int]:
        """One request's routing and cache decisions, without time or queues.

        The same steps as a simulated request (the plan, the target, the cache walk, the
        fills or a write's invalidations) applied at once, for checks that compare the
        simulator's decisions with the deployment's (``tests/unit/test_request_path.py``).

        Returns:
            ``(entry region, replica node, level that hit or -1 (None for a write),
            refused-fill bitmask)``; ``(None, None, None, 0)`` when no region may serve it.
        """
        ri = self.regions.index(client_region)
        ti = REQUEST_TYPES.index(request_type)
        plan = self._plan(ri, ti)
        if plan.entry is None or plan.stale:
            return None, None, None, 0
        tgt = self._targets(plan, np.array([user_id], dtype=np.int64))[0]
        node = tgt[2] if tgt is not None else None
        stack = plan.stacks[server % len(plan.stacks)]
        ki = self.key_info
        ki.key, ki.j, ki.cls = -1, None, 0
        if ti == _WR:
            self._invalidate(plan, stack, user_id)
            return plan.entry, node, None, 0
        hit = cache_walk.lookup(stack, user_id, now_s)
        refused = 0
        if hit != 0 and (hit > 0 or tgt is not None):
            refused = self._fill(plan, stack, user_id, now_s, hit)
        return plan.entry, node, hit, refused

    def _fin_fr(self, req: _Req, end: float) -> None:
        self.collector.done(req.t0, req.ri, _FR, end + req.hop + req.plan.leg - req.t0)

    def _hot_rec(self, req: _Req) -> None:
        """A recommend's sourcing read at the hot tier (its end starts recall)."""
        now = self.env._now
        end = req.tgt[0].join(now)
        self._rec_sourced(req, end + req.hop)

    # recommend: sourcing -> recall (warm pool) -> integrity -> precision (API again)
    def _rec_sourced(self, req: _Req, t: float) -> None:
        b = self.budget["sourcing"]
        d = t - req.v0
        if d > b:
            req.credit += d - b
            self._degrade("sourcing", req)
        plan = req.plan
        if plan.proc_ok:
            self.audit_checks += 1
        else:
            self._audit(plan.j, "user_embeddings", plan.entry, "process")  # type: ignore[arg-type]
        req.v0 = t
        plan.warm.defer(t, req, self._fin_recall)

    def _fin_recall(self, req: _Req, end: float) -> None:
        """Recall ended (warm pool): integrity, then precision on the API (deferred)."""
        budget = self.budget
        d = end - req.v0
        if d > budget["recall"]:
            req.credit += d - budget["recall"]
            self._degrade("recall", req)
        integ = self.opt.integrity_ms
        if integ > budget["integrity"]:
            req.credit += integ - budget["integrity"]
            self._degrade("integrity", req)
        at = end + integ
        req.v0 = at
        # the precision step joins the API pool a second time. In a slice the pool runs in
        # slow motion (service x 1/R), so the gap since the first visit is dilated the same
        # way: the two visits are then as independent as at full scale. The step's real
        # times are restored in _fin_rec (shift); at R = 1 nothing moves.
        joined = req.tj + (at - req.tj) * self._stretch
        req.hop = at - joined
        req.plan.api.defer(joined, req, self._fin_rec)

    def _fin_rec(self, req: _Req, end: float) -> None:
        end += req.hop  # back from the dilated join time (see _fin_recall)
        d = end - req.v0
        b = self.budget["precision"]
        if d > b:
            req.credit += d - b
            self._degrade("precision", req)
        if req.degraded and req.t0 >= self.warm_ms:
            self.collector.counts.degraded += 1
        self.collector.done(
            req.t0, req.ri, _REC, end + req.plan.leg - req.t0 - req.credit, req.degraded
        )

    def _degrade(self, stage: str, req: _Req) -> None:
        req.degraded = True
        if req.t0 >= self.warm_ms:
            self.collector.counts.degraded_by_stage[stage] += 1

    def _write(self, req: _Req, plan: _Plan, tgt: Any, now: float) -> None:
        """An interaction write: invalidate, then the primary (acked with WAIT 1)."""
        if tgt is None or (self._faulty and self._dead(tgt[2], tgt[1], plan.entry)):  # type: ignore[arg-type]
            self.collector.fail(req.t0, req.ri, _WR, "no_region" if tgt is None else "stale")
            return
        uid = req.uid
        if not req.head:  # a head user's key is never in the keyed caches
            ki = self.key_info
            ki.key, ki.j, ki.cls = uid, plan.j, req.cls
            stacks = plan.stacks
            self._invalidate(plan, stacks[req.draw % len(stacks)], uid)
        pool, preg, _, half, ok, others = tgt
        if ok:
            self.audit_checks += 1
        else:
            self._audit(plan.j, "interactions", preg, "store")
        at = now + half
        req.hop = half
        pool.defer(at, req, self._fin_wr)
        faulty = self._faulty
        for opool, oreg, onode, ohalf, ook in others:
            if faulty and self._dead(onode, oreg, preg):
                continue
            if ook:
                self.audit_checks += 1
            else:
                self._audit(plan.j, "interactions", oreg, "store")
            opool.defer(at + ohalf, req, None)

    def _fin_wr(self, req: _Req, end: float) -> None:
        preg = req.tgt[1]
        rep = self.rep_ms[preg]
        wait1 = (self.rtt[(preg, preg)] + rep()) if rep is not None else 0.0
        self.collector.done(req.t0, req.ri, _WR, end + wait1 + req.hop + req.plan.leg - req.t0)

    # ------------------------------------------------------------------ running
    def run(self, on_second: Callable[[int], None] | None = None) -> SimResults:
        """Run to the end of the arrivals, drain in-flight requests, return the results.

        Args:
            on_second: called with the simulated second after each simulated second
                (progress bars); ``None`` for no callback.

        The cyclic garbage collector is paused while the simulation runs: requests form
        no reference cycles (they are freed by reference counting), and collector passes
        over the large cache tables only cost time.
        """
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._run(on_second)
        finally:
            if was_enabled:
                gc.enable()
        return self.results()

    def _run(self, on_second: Callable[[int], None] | None) -> None:
        loop = self.loop
        # upstream pools first: their due joins may queue joins in the API pools
        pools = [*self.warm.values(), *self.api.values(), *self.hot.values()]
        models = list(self.models.values()) if self.opt.warm_start else []
        for m in models:
            m.advance(0.5)
        end_s = int(self.duration_ms // 1000.0)
        for sec in range(1, end_s + 1):
            loop.run_until(sec * 1000.0)
            now = sec * 1000.0
            for p in pools:  # bounded memory: apply the deferred joins that are due
                if p.deferred:
                    p.apply_deferred(now)
                p.flush_waits(_FLUSH_ROWS)
            self.collector.flush(_FLUSH_ROWS)  # bin the buffered answers (bounded memory)
            for m in models:  # the warm start's residency decays with time
                m.advance(sec + 0.5)
            if on_second is not None:
                on_second(sec)
        if self.duration_ms > end_s * 1000.0:
            loop.run_until(self.duration_ms)
        # drain: requests in flight finish; nothing new arrives
        loop.run_until(self.duration_ms + 10 * self.opt.timeout_ms)
        for p in pools:
            p.finish()

    def results(self) -> SimResults:
        """What this run measured (call after :meth:`run`)."""
        self._drop_plans()
        pools = [*self.api.values(), *self.warm.values(), *self.hot.values()]
        return self.collector.results(
            pools,
            cache_hits={n: self.walks[i + 1] for i, (n, _) in enumerate(self.levels)},
            cache_misses={
                n: self.walks[0] + sum(self.walks[i + 2 :]) for i, (n, _) in enumerate(self.levels)
            },
            audit_checks=self.audit_checks,
            audit_violations=self.audit_violations,
            audit_examples=list(self.audit_examples),
            served_by=dict(self.served_by),
            arrived=self.arrived,
            epochs=self.ep,
            cache_model=self.cache_model(),
        )

    def cache_model(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per region and level: the steady-state model (``calibrated`` when the keyed
        replay corrected it) and the slice's capacity."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for r, levels in self.caches.items():
            m = self.models.get(r)
            row: dict[str, dict[str, float]] = {}
            for name, insts in levels.items():
                lm = m.levels.get(name) if m is not None else None
                row[name] = {
                    "capacity_simulated": float(insts[0].capacity),
                    "instances": float(len(insts)),
                    "t_c_s": lm.t_c if lm else float("nan"),
                    "model_hit_ratio": lm.hit_ratio if lm else float("nan"),
                    "calibrated": bool(lm and lm.calibrated),
                }
            out[r] = row
        return out
