"""The analytic model of a spec: per-node load, cache hit ratios, queueing and latency.

The planner screens thousands of candidate topologies with this model and confirms the
best few with the simulator. It walks the same request path as the engine
(:mod:`geoshard.sim.engine`) with formulas instead of events, calling the same router,
residency policy and cache steady state:

* **traffic**: every client region sends ``peak_qps x`` the busiest diurnal step ``x``
  its scenario multiplier, split by the mix; a request enters the first of
  :meth:`Router.entry_candidates <geoshard.cluster.routing.Router.entry_candidates>` under
  the scenario's health. An API pool serves a feature read and a write once and a
  recommend twice (the precision step); a warm pool serves a recommend's recall.
* **caches**: :class:`~geoshard.sim.warm.CacheModel` (the simulator's warm start): per
  region and popularity class, Che's characteristic time with TTLs and write
  invalidations, the L1 (one per API server) -> L2 -> regional stack as a filtered
  stream. Its limits are the model's: independent references (no temporal locality
  beyond popularity), SIEVE approximated by LRU, and the filtered stream overstating a
  lower level whose size is close to the level above (sim-anchors §3.5).
* **hot nodes**: the reads that miss every cache go to the replica nearest the entry,
  writes to every replica; each node's share comes from the real ring
  (:mod:`geoshard.sim.ringload`: the most popular users key by key, the rest by arc
  shares), so the hottest node of every region is named.
* **queueing**: every pool is M/G/c (:mod:`geoshard.sim.queueing`: Erlang C, Allen-Cunneen
  for the spec's service-time distributions): probability of waiting, mean and
  percentile waits.
* **latency** per request type and client region: the network legs, API sojourns,
  cache lookups, the hot or warm tier, the stage budgets of a recommend (a stage over
  budget ends at its budget and the answer is degraded) and a write's ``WAIT 1``, added
  as independent delays on a grid (:mod:`geoshard.sim.delays`): P50, P99 and the share
  of requests answered within the P99 target without degradation.

Everything is at steady state: no warm-up, spill or shedding (a plan keeps every pool
under its load ceiling, where the engine neither spills nor sheds).

Examples:
    >>> from geoshard.spec import load_spec
    >>> model = AnalyticModel(load_spec("examples/local.yaml"))       # doctest: +SKIP
    >>> res = model.evaluate(Sizing.of(model.spec), [Scenario("normal", "normal")])  # doctest: +SKIP
    >>> res.scenarios[0].pools["eu-west/api"].load                       # doctest: +SKIP
    0.03...
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from geoshard.cluster.routing import REQUEST_DATA_CLASSES, Health, Router
from geoshard.spec import REQUEST_TYPES, STAGES, Spec

from .delays import Delay, Grid, service_cv2, service_high_ms, service_mean_ms
from .engine import EngineOptions, populations
from .queueing import WaitModel, mgc_wait
from .ringload import HEAD_KEYS, RegionRing, head_hashes, node_names
from .scenarios import Scenario
from .warm import CacheModel, KeyInfo, PopularityClasses

__all__ = [
    "Analysis",
    "AnalyticModel",
    "PoolResult",
    "RegionSizing",
    "RowResult",
    "ScenarioResult",
    "Sizing",
    "peak_multiplier",
]

_LEVELS = ("l1", "l2", "regional")
_HOT_GROUPS = 8  # a hot region's nodes in this many load groups for the latency mixture
_TAIL_SAMPLE = 1 << 15  # keys of a jurisdiction's tail in the general routing path


def peak_multiplier(spec: Spec) -> float:
    """The busiest diurnal step's multiplier (every scenario runs at the peak)."""
    return float(max(spec.workload.diurnal))


class RegionSizing(NamedTuple):
    """The sizes of one region's pools."""

    api_servers: int
    api_workers: int
    warm_nodes: int
    warm_workers: int
    hot_nodes: int
    hot_workers: int


@dataclass(frozen=True)
class Sizing:
    """A candidate: every region's pool sizes and the cache capacities.

    Attributes:
        regions: ``(region, sizes)`` in spec order.
        caches: ``(level, capacity in items)`` of the levels the spec has.
    """

    regions: tuple[tuple[str, RegionSizing], ...]
    caches: tuple[tuple[str, float], ...]

    @classmethod
    def of(cls, spec: Spec) -> Sizing:
        """The sizes a spec states."""
        regs = tuple(
            (
                r,
                RegionSizing(
                    x.api.servers,
                    x.api.workers,
                    x.warm.nodes,
                    x.warm.workers,
                    x.hot.nodes,
                    x.hot.workers,
                ),
            )
            for r, x in spec.regions.items()
        )
        caches = []
        for name in _LEVELS:
            lvl = getattr(spec.caches, name)
            if lvl is not None:
                cap = (
                    lvl.capacity_items
                    if lvl.capacity_items is not None
                    else (lvl.capacity_bytes or 0) / spec.workload.value_bytes
                )
                caches.append((name, float(cap)))
        return cls(regs, tuple(caches))

    def get(self, region: str) -> RegionSizing:
        """The sizes of ``region``."""
        return dict(self.regions)[region]

    def cache(self, level: str) -> float | None:
        """The capacity of a cache level in items (None: the spec has no such level)."""
        return dict(self.caches).get(level)

    def with_region(self, region: str, sizes: RegionSizing) -> Sizing:
        """This sizing with ``region``'s sizes replaced."""
        return replace(
            self, regions=tuple((r, sizes if r == region else s) for r, s in self.regions)
        )

    def with_caches(self, caches: dict[str, float]) -> Sizing:
        """This sizing with some cache capacities replaced."""
        return replace(self, caches=tuple((n, caches.get(n, c)) for n, c in self.caches))

    def apply(self, spec: Spec) -> Spec:
        """``spec`` with these sizes (a capacity in bytes stays in bytes)."""
        data: dict[str, Any] = spec.model_dump(mode="json")
        for r, s in self.regions:
            reg = data["regions"][r]
            reg["api"]["servers"], reg["api"]["workers"] = s.api_servers, s.api_workers
            reg["warm"]["nodes"], reg["warm"]["workers"] = s.warm_nodes, s.warm_workers
            reg["hot"]["nodes"], reg["hot"]["workers"] = s.hot_nodes, s.hot_workers
        for name, cap in self.caches:
            lvl = data["caches"][name]
            if lvl.get("capacity_items") is not None:
                lvl["capacity_items"] = round(cap)
            else:
                lvl["capacity_bytes"] = round(cap * spec.workload.value_bytes)
        return Spec.model_validate(data)


@dataclass
class PoolResult:
    """One pool in one scenario.

    Attributes:
        name: ``<region>/api``, ``<region>/warm`` or ``<region>/hot-<i>``.
        region, kind: where and what.
        servers: ``c`` (servers x workers).
        arrivals_per_s: visits per second.
        offered: offered load in Erlangs; ``load`` = offered / servers.
        p_wait, wait_mean_ms, wait_p99_ms: the queueing delay.
        cs2: the squared coefficient of variation of its service time.
    """

    name: str
    region: str
    kind: str
    servers: int
    arrivals_per_s: float
    offered: float
    load: float
    p_wait: float
    wait_mean_ms: float
    wait_p99_ms: float
    cs2: float


@dataclass
class RowResult:
    """One request type from one client region in one scenario.

    Attributes:
        type, client, entry: the request type, the client's region and where it enters
            (None: no region may serve it; every such request fails).
        rate_per_s: requests per second.
        p50_ms, p99_ms, mean_ms: its latency.
        attainment: share within the type's P99 target (not degraded, unless the spec
            accepts degraded answers).
        degraded: share of degraded answers (recommend stages over budget).
    """

    type: str
    client: str
    entry: str | None
    rate_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    attainment: float
    degraded: float


@dataclass
class ScenarioResult:
    """The model's answer for one scenario.

    Attributes:
        scenario: the scenario.
        pools: pool name -> :class:`PoolResult`.
        rows: per (type, client region).
        cache_lookups, cache_hits: per level, lookups reaching it and hits there, per s.
        hottest: region -> (hot node, its load).
        hot_memory_gb: region -> the fullest hot node's data in GiB (normal scenario).
    """

    scenario: Scenario
    pools: dict[str, PoolResult]
    rows: list[RowResult]
    cache_lookups: dict[str, float]
    cache_hits: dict[str, float]
    hottest: dict[str, tuple[str, float]]
    hot_memory_gb: dict[str, float] = field(default_factory=dict)

    def hit_ratio(self, level: str) -> float:
        """The share of lookups reaching ``level`` that hit there."""
        n = self.cache_lookups.get(level, 0.0)
        return self.cache_hits.get(level, 0.0) / n if n else 0.0


@dataclass
class Analysis:
    """The model's answer for one sizing in every scenario."""

    sizing: Sizing
    scenarios: list[ScenarioResult]


@dataclass
class _Traffic:
    entry: dict[tuple[str, int], str | None]
    rate: dict[tuple[str, int], float]  # per ms
    api: dict[str, float]  # visits per ms
    warm: dict[str, float]
    reads: dict[str, dict[str, float]]  # entry -> jurisdiction -> lookups per ms
    writes_in: dict[str, dict[str, float]]  # entry -> jurisdiction -> writes per ms
    writes: dict[str, float]  # jurisdiction -> writes per ms


@dataclass
class _Hits:
    """Per jurisdiction at one entry region: P(hit at each level), P(miss), per class."""

    level_p: list[float]  # P(a read hits at level i)
    reach: list[float]  # P(a read reaches level i)
    miss_class: np.ndarray  # P(miss everywhere) per popularity class


@dataclass
class _Copies:
    mode: str  # "first", "first+second", "none" or "general"
    region_ring: RegionRing | None = None


class AnalyticModel:
    """The analytic model of one spec: build once, evaluate many sizings.

    Args:
        spec: the spec (its sizes are the default sizing).
        seed: the seed of the populations (as the simulator's, for the same id layout).
    """

    def __init__(self, spec: Spec, seed: int = 1) -> None:
        self.spec = spec
        self.router = Router.from_spec(spec)
        self.policy = self.router.residency
        self.net = self.router.network
        self.regions = list(spec.regions)
        self.jur = {r: reg.jurisdiction for r, reg in spec.regions.items()}
        self.pops = populations(spec, 1.0, seed)
        self.classes = {j: PopularityClasses.of(p) for j, p in self.pops.items()}
        self.key_info = KeyInfo()
        from .parallel import components

        self.part_of = {r: tuple(p) for p in components(spec) for r in p}
        self.peak = peak_multiplier(spec)
        self.mix = [spec.workload.mix.get(t, 0.0) for t in REQUEST_TYPES]
        users = spec.shards.users
        self.replication = users.replication
        self.vnodes = users.vnodes or 3072
        self.weights = dict(users.weights)
        self.integrity_ms = EngineOptions().integrity_ms
        rec = spec.slo.latency.get("recommend")
        self.budget = {
            s: (spec.slo.stage_budgets.get(s, 1.0) * rec.p99_ms if rec else math.inf)
            for s in STAGES
        }
        # the head: the most popular users of each jurisdiction, key by key
        self.head: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for j, p in self.pops.items():
            k = min(p.n, HEAD_KEYS)
            ids = p.user_of_rank(np.arange(k))
            self.head[j] = (ids, head_hashes(ids))
        self._traffic: dict[Scenario, _Traffic] = {}
        self._hits: dict[tuple[Any, ...], dict[str, _Hits]] = {}
        self._rings: dict[tuple[str, int, frozenset[str]], RegionRing] = {}
        self._head_nodes: dict[tuple[str, int, frozenset[str], str, int], list[str]] = {}
        self._delays: dict[tuple[Any, ...], Delay] = {}
        self._hot: dict[tuple[Any, ...], dict[str, float]] = {}
        self._general: dict[tuple[Any, ...], Router] = {}

    # ------------------------------------------------------------------ traffic
    def client_rate(self, region: str, sc: Scenario) -> float:
        """Requests per ms from ``region``'s clients in ``sc`` (0 without users)."""
        j = self.jur[region]
        if j not in self.pops:
            return 0.0
        return (
            self.spec.workload.peak_qps.get(region, 0.0)
            * self.peak
            * sc.multiplier(region)
            / 1000.0
        )

    def traffic(self, sc: Scenario) -> _Traffic:
        """Where every request enters in ``sc`` and what each pool serves (memoised)."""
        t = self._traffic.get(sc)
        if t is not None:
            return t
        health = Health(frozenset(), sc.down_regions)
        tr = _Traffic(
            {},
            {},
            dict.fromkeys(self.regions, 0.0),
            dict.fromkeys(self.regions, 0.0),
            {r: {} for r in self.regions},
            {r: {} for r in self.regions},
            {},
        )
        for c in self.regions:
            lam = self.client_rate(c, sc)
            j = self.jur[c]
            for ti, t_name in enumerate(REQUEST_TYPES):
                rate = lam * self.mix[ti]
                if rate <= 0:
                    continue
                cands = self.router.entry_candidates(c, j, REQUEST_DATA_CLASSES[t_name], health)
                e = cands[0] if cands else None
                tr.entry[(c, ti)] = e
                tr.rate[(c, ti)] = rate
                if ti == 2:
                    tr.writes[j] = tr.writes.get(j, 0.0) + rate
                if e is None:
                    continue
                tr.api[e] += rate * (2.0 if ti == 1 else 1.0)
                if ti == 1:
                    tr.warm[e] += rate
                if ti == 2:
                    tr.writes_in[e][j] = tr.writes_in[e].get(j, 0.0) + rate
                else:
                    tr.reads[e][j] = tr.reads[e].get(j, 0.0) + rate
        self._traffic[sc] = tr
        return tr

    # ------------------------------------------------------------------ caches
    def hits(self, sc: Scenario, region: str, servers: int, sizing: Sizing) -> dict[str, _Hits]:
        """Per jurisdiction reading at ``region``: the cache hit probabilities.

        In a region loss the caches hold what they held before it: a key's chance to be
        cached is that of the normal traffic, while the rerouted clients' requests come
        at the new rates. The caches refill over a TTL (minutes; the L2 of
        ``examples/global.yaml`` keeps items 600 s), longer than a confirmation run and
        than the moments after a loss that a plan must survive; a steady state with the
        merged streams would claim 9 points more L2 hits than the simulator measures.
        """
        key = (sc, region, servers, sizing.caches)
        got = self._hits.get(key)
        if got is not None:
            return got
        before = self.traffic(Scenario("normal", "normal") if sc.down_regions else sc)
        read = {j: v * 1000.0 for j, v in self.traffic(sc).reads[region].items()}
        held = {j: v * 1000.0 for j, v in before.reads[region].items()}
        write = {j: v * 1000.0 for j, v in before.writes_in[region].items()}
        inval = {j: v * 1000.0 for j, v in before.writes.items()}
        out: dict[str, _Hits] = {}
        levels = self._levels(sizing)
        pops = {
            j: p
            for j, p in self.pops.items()
            if held.get(j, 0.0) > 0 and self.policy.is_allowed(j, "user_features", region, "store")
        }
        model = (
            CacheModel(pops, held, write, inval, servers, levels, 1.0, self.classes, self.key_info)
            if pops and levels
            else None
        )
        for j in read:
            cl = self.classes[j]
            w = cl.p * cl.count
            w = w / w.sum()
            reach_c = np.ones(len(w))
            level_p: list[float] = []
            reach: list[float] = []
            for name, *_ in levels:
                h = (
                    np.asarray(model.levels[name].hit0[j])
                    if model is not None and j in model.levels[name].hit0
                    else np.zeros(len(w))
                )
                reach.append(float(np.dot(w, reach_c)))
                level_p.append(float(np.dot(w, reach_c * h)))
                reach_c = reach_c * (1.0 - h)
            out[j] = _Hits(level_p, reach, reach_c)
        self._hits[key] = out
        return out

    def _levels(self, sizing: Sizing) -> list[tuple[str, str, float, float | None]]:
        out = []
        for name, cap in sizing.caches:
            lvl = getattr(self.spec.caches, name)
            out.append((name, lvl.policy, float(cap), lvl.ttl_s))
        return out

    # ------------------------------------------------------------------ the ring
    def ring(self, region: str, nodes: int, down: frozenset[str] = frozenset()) -> RegionRing:
        """The ring of ``region``'s live hot nodes (memoised)."""
        key = (region, nodes, down)
        r = self._rings.get(key)
        if r is None:
            r = self._rings[key] = RegionRing.of(region, nodes, self.weights, self.vnodes, down)
        return r

    def _head_nodes_of(
        self, ring: RegionRing, j: str, nodes: int, down: frozenset[str], which: int
    ) -> list[str]:
        key = (ring.region, nodes, down, j, which)
        got = self._head_nodes.get(key)
        if got is None:
            _ids, hashes = self.head[j]
            got = ring.first_nodes(hashes) if which == 1 else ring.second_nodes(hashes)
            self._head_nodes[key] = got
        return got

    def _live_store(
        self, j: str, dc: str, sc: Scenario, sizing: Sizing, down_nodes: frozenset[str]
    ) -> list[str]:
        out = []
        for r in sorted(self.policy.allowed_regions(j, dc, "store")):
            if r in sc.down_regions or r not in self.spec.regions:
                continue
            if any(n not in down_nodes for n in node_names(r, sizing.get(r).hot_nodes)):
                out.append(r)
        return out

    def _copies(
        self, j: str, dc: str, region: str, sc: Scenario, sizing: Sizing, down_nodes: frozenset[str]
    ) -> _Copies:
        live = self._live_store(j, dc, sc, sizing, down_nodes)
        if region not in live:
            return _Copies("none")
        down = frozenset(n for n in down_nodes if n.startswith(region + "/"))
        ring = self.ring(region, sizing.get(region).hot_nodes, down)
        if self.replication == len(live):
            return _Copies("first", ring)
        if len(live) == 1 and self.replication == 2:
            return _Copies("first+second", ring)
        return _Copies("general", ring)

    def read_region(
        self, j: str, entry: str, sc: Scenario, sizing: Sizing, down_nodes: frozenset[str]
    ) -> str | None:
        """Where a read of ``j`` entering at ``entry`` goes when every cache misses: the
        nearest live region holding a copy."""
        live = self._live_store(j, "user_features", sc, sizing, down_nodes)
        if not live:
            return None
        return self.net.by_distance(entry, live)[0]

    def primary_shares(
        self, j: str, sc: Scenario, sizing: Sizing, down_nodes: frozenset[str]
    ) -> dict[str, float]:
        """Region -> share of ``j``'s writes whose primary is there (popularity-weighted:
        head keys exactly, the tail by arc shares of the merged ring)."""
        live = self._live_store(j, "interactions", sc, sizing, down_nodes)
        if len(live) <= 1:
            return dict.fromkeys(live, 1.0)
        from geoshard.shards import HashRing

        names = {
            n: float(self.weights.get(n, 1.0))
            for r in live
            for n in node_names(r, sizing.get(r).hot_nodes)
            if n not in down_nodes
        }
        key = ("primary", j, tuple(sorted(names)))
        got = self._hot.get(key)
        if got is not None:
            return got
        ring = HashRing(names, vnodes=self.vnodes)
        cl = self.classes[j]
        ids, hashes = self.head[j]
        idx = ring.owners_of_hashes(hashes).tolist()
        w = cl.p * cl.count
        w = w / w.sum()
        k = len(ids)
        out = dict.fromkeys(live, 0.0)
        for n, i in zip(idx, range(k), strict=True):
            out[ring.nodes[n].split("/")[0]] += float(w[i])
        tail = float(w[k:].sum())
        for n, s in ring.arc_shares().items():
            out[n.split("/")[0]] += tail * s
        self._hot[key] = out
        return out

    # ------------------------------------------------------------------ hot loads
    def hot_rates(
        self, sc: Scenario, region: str, sizing: Sizing, down_nodes: frozenset[str]
    ) -> dict[str, float]:
        """Requests per ms at each live hot node of ``region`` in ``sc``."""
        if region in sc.down_regions:
            return {}
        rs = sizing.get(region)
        part = self.part_of[region]
        servers = {r: sizing.get(r).api_servers for r in self.regions}
        key = (
            sc,
            region,
            sizing.caches,
            down_nodes,
            tuple((r, servers[r], sizing.get(r).hot_nodes) for r in part),
        )
        got = self._hot.get(key)
        if got is not None:
            return got
        tr = self.traffic(sc)
        down = frozenset(n for n in down_nodes if n.startswith(region + "/"))
        live = [n for n in node_names(region, rs.hot_nodes) if n not in down]
        rates = dict.fromkeys(live, 0.0)
        for j in self.pops:
            cl = self.classes[j]
            k = len(self.head[j][0])
            # reads that miss every cache, per popularity class (per key)
            miss = np.zeros(len(cl.p))
            for e in self.regions:
                lam = tr.reads[e].get(j, 0.0)
                if lam <= 0 or self.read_region(j, e, sc, sizing, down_nodes) != region:
                    continue
                h = self.hits(sc, e, servers[e], sizing)[j]
                miss += lam * cl.p * h.miss_class
            cp = self._copies(j, "user_features", region, sc, sizing, down_nodes)
            self._spread(
                rates,
                cp,
                j,
                miss,
                cl.count,
                k,
                rs.hot_nodes,
                down,
                first_only=True,
                sc=sc,
                sizing=sizing,
                down_nodes=down_nodes,
                op="read",
            )
            wr = tr.writes.get(j, 0.0)
            if wr > 0:
                cpw = self._copies(j, "interactions", region, sc, sizing, down_nodes)
                self._spread(
                    rates,
                    cpw,
                    j,
                    wr * cl.p,
                    cl.count,
                    k,
                    rs.hot_nodes,
                    down,
                    first_only=False,
                    sc=sc,
                    sizing=sizing,
                    down_nodes=down_nodes,
                    op="write",
                )
        self._hot[key] = rates
        return rates

    def _spread(
        self,
        rates: dict[str, float],
        cp: _Copies,
        j: str,
        per_key: np.ndarray,
        count: np.ndarray,
        k: int,
        nodes: int,
        down: frozenset[str],
        *,
        first_only: bool,
        sc: Scenario,
        sizing: Sizing,
        down_nodes: frozenset[str],
        op: str,
    ) -> None:
        """Add per-key rates (by class) to the nodes holding the keys' copies."""
        if cp.mode == "none" or not per_key.any():
            return
        if cp.mode == "general":
            self._spread_general(
                rates,
                j,
                per_key,
                count,
                sc,
                sizing,
                down_nodes,
                op,
                cp.region_ring.region if cp.region_ring else "",
            )
            return
        ring = cp.region_ring
        assert ring is not None
        tail = float(np.dot(per_key[k:], count[k:]))
        head = per_key[:k]
        orders = [1] if (cp.mode == "first" or first_only) else [1, 2]
        for which in orders:
            names = self._head_nodes_of(ring, j, nodes, down, which)
            for n, v in zip(names, head.tolist(), strict=True):
                rates[n] += v
            shares = ring.shares if which == 1 else ring.second_shares
            for n, s in shares.items():
                rates[n] += tail * s

    def _spread_general(
        self,
        rates: dict[str, float],
        j: str,
        per_key: np.ndarray,
        count: np.ndarray,
        sc: Scenario,
        sizing: Sizing,
        down_nodes: frozenset[str],
        op: str,
        region: str,
    ) -> None:
        """The real router over the head and a stratified sample of the tail."""
        counts = tuple((r, sizing.get(r).hot_nodes) for r in self.regions)
        router = self._general.get(counts)
        if router is None:
            router = self._general[counts] = Router.from_spec(sizing.apply(self.spec))
        cl = self.classes[j]
        pop = self.pops[j]
        ranks: list[int] = []
        weight: list[float] = []
        k = len(self.head[j][0])
        ranks.extend(range(k))
        weight.extend(per_key[:k].tolist())
        bins = len(cl.p) - k
        per_bin = max(1, _TAIL_SAMPLE // max(bins, 1))
        for c in range(k, len(cl.p)):
            lo = cl.lo[c]
            hi = cl.lo[c + 1] if c + 1 < len(cl.lo) else pop.n
            m = min(per_bin, hi - lo)
            picks = np.linspace(lo, hi - 1, m).round().astype(np.int64).tolist()
            ranks.extend(picks)
            weight.extend([float(per_key[c] * count[c] / m)] * m)
        ids = pop.user_of_rank(np.array(ranks, dtype=np.int64))
        health = sc.health(down_nodes)
        dc = "user_features" if op == "read" else "interactions"
        codes, routes = router.route_codes(
            j,
            ids,
            "read" if op == "read" else "write",
            health,
            dc,
            near=region if op == "read" else None,
        )
        wts = np.array(weight)
        per_code = np.bincount(codes, weights=wts, minlength=len(routes))
        for code, v in enumerate(per_code.tolist()):
            nodes_, _regions = routes[code]
            targets = nodes_[:1] if op == "read" else nodes_
            for n in targets:
                if n in rates:
                    rates[n] += v

    def hottest(self, region: str, sizing: Sizing) -> str | None:
        """The busiest hot node of ``region`` in the normal scenario (the n-1 crash)."""
        rates = self.hot_rates(Scenario("normal", "normal"), region, sizing, frozenset())
        if not rates:
            return None
        return max(sorted(rates), key=lambda n: rates[n])

    def crashed(
        self, sc: Scenario, sizing: Sizing, regions: Iterable[str] | None = None
    ) -> frozenset[str]:
        """The hot nodes down in ``sc`` (n-1: the hottest of every region with two or more;
        of ``regions`` only, when given)."""
        if not sc.minus_one:
            return frozenset()
        out = set()
        for r in self.regions if regions is None else regions:
            if sizing.get(r).hot_nodes >= 2:
                n = self.hottest(r, sizing)
                if n is not None:
                    out.add(n)
        return frozenset(out)

    # ------------------------------------------------------------------ pools
    def pool_waits(
        self,
        sc: Scenario,
        region: str,
        sizing: Sizing,
        down_nodes: frozenset[str],
        kinds: Iterable[str] = ("api", "warm", "hot"),
    ) -> dict[str, tuple[PoolResult, WaitModel]]:
        """The API, warm and hot pools of ``region`` in ``sc`` (of ``kinds`` only)."""
        kinds = set(kinds)
        if region in sc.down_regions:
            return {}
        reg = self.spec.regions[region]
        rs = sizing.get(region)
        tr = self.traffic(sc)
        minus = 1 if sc.minus_one else 0
        out: dict[str, tuple[PoolResult, WaitModel]] = {}

        def add(name: str, kind: str, c: int, lam: float, dist: Any) -> None:
            mean = service_mean_ms(dist)
            cs2 = service_cv2(dist)
            if c < 1:
                w = (
                    WaitModel(0, lam * mean, 1.0, math.inf)
                    if lam > 0
                    else WaitModel(0, 0.0, 0.0, 0.0)
                )
                load = math.inf if lam > 0 else 0.0
            else:
                w = mgc_wait(c, lam, mean, cs2)
                load = w.load
            out[name] = (
                PoolResult(
                    name,
                    region,
                    kind,
                    c,
                    lam * 1000.0,
                    lam * mean,
                    load,
                    w.p_wait,
                    w.mean_ms,
                    w.quantile_ms(0.99),
                    cs2,
                ),
                w,
            )

        if "api" in kinds:
            add(
                f"{region}/api",
                "api",
                (rs.api_servers - minus) * rs.api_workers,
                tr.api[region],
                reg.api.service_time,
            )
        if "warm" in kinds:
            add(
                f"{region}/warm",
                "warm",
                (rs.warm_nodes - minus) * rs.warm_workers,
                tr.warm[region],
                reg.warm.service_time,
            )
        if "hot" in kinds:
            for n, lam in self.hot_rates(sc, region, sizing, down_nodes).items():
                add(n, "hot", rs.hot_workers, lam, reg.hot.service_time)
        return out

    # ------------------------------------------------------------------ latency
    def _delay(self, grid: Grid, key: tuple[Any, ...], make: Any) -> Delay:
        k = (grid, *key)
        d = self._delays.get(k)
        if d is None:
            if len(self._delays) > 20_000:
                self._delays.clear()
            d = self._delays[k] = make()
        return d

    def _sojourn(self, grid: Grid, w: WaitModel, dist: Any) -> Delay:
        wd = self._delay(grid, ("wait", w.p_wait, w.cond_mean_ms, w.stable), lambda: grid.wait(w))
        sd = self._delay(grid, ("svc", dist), lambda: grid.service(dist))
        return self._delay(
            grid, ("soj", w.p_wait, w.cond_mean_ms, w.stable, dist), lambda: wd.plus(sd)
        )

    def _hot_sojourn(
        self, grid: Grid, region: str, pools: dict[str, tuple[PoolResult, WaitModel]]
    ) -> Delay | None:
        """The sojourn at a node of ``region``'s hot tier: a mixture over load groups."""
        hot = [(p.arrivals_per_s, w) for p, w in pools.values() if p.kind == "hot"]
        if not hot:
            return None
        dist = self.spec.regions[region].hot.service_time
        if any(not w.stable for _, w in hot if _ > 0):
            return Delay(grid, 0.0, np.zeros(grid.size), 1.0)
        hot.sort(key=lambda x: x[1].offered)
        groups = np.array_split(np.arange(len(hot)), min(_HOT_GROUPS, len(hot)))
        parts = []
        for g in groups:
            lam = sum(hot[i][0] for i in g)
            if lam <= 0:
                continue
            # the group's busiest node stands for the group (conservative within a group)
            w = hot[int(g[-1])][1]
            parts.append((lam, self._sojourn(grid, w, dist)))
        if not parts:
            return self._sojourn(grid, hot[-1][1], dist)
        return Delay.mixture(parts)

    def _level_delays(self, grid: Grid, region: str, sizing: Sizing) -> list[Delay]:
        out = []
        intra = self.net.rtt_ms(region, region)
        for name, _ in sizing.caches:
            lvl = getattr(self.spec.caches, name)
            d = self._delay(
                grid, ("svc", lvl.service_time), lambda lv=lvl: grid.service(lv.service_time)
            )
            out.append(d if name == "l1" else d.shifted(intra))
        return out

    def _sourcing(
        self,
        grid: Grid,
        j: str,
        e: str,
        sc: Scenario,
        sizing: Sizing,
        down_nodes: frozenset[str],
        pools: dict[str, dict[str, tuple[PoolResult, WaitModel]]],
    ) -> Delay:
        """From the API's end to the user's features: cache levels, else the hot tier."""
        h = self.hits(sc, e, sizing.get(e).api_servers, sizing)[j]
        levels = self._level_delays(grid, e, sizing)
        parts: list[tuple[float, Delay]] = []
        acc = grid.constant(0.0)
        for i, d in enumerate(levels):
            acc = acc.plus(d)
            if h.level_p[i] > 0:
                parts.append((h.level_p[i], acc))
        p_miss = 1.0 - sum(h.level_p)
        if p_miss > 1e-12:
            q = self.read_region(j, e, sc, sizing, down_nodes)
            hot = self._hot_sojourn(grid, q, pools[q]) if q is not None else None
            if hot is None:
                parts.append((p_miss, Delay(grid, 0.0, np.zeros(grid.size), 1.0)))
            else:
                parts.append((p_miss, acc.plus(hot).shifted(self.net.rtt_ms(e, q))))  # type: ignore[arg-type]
        return Delay.mixture(parts)

    def _write_tail(
        self,
        grid: Grid,
        j: str,
        e: str,
        sc: Scenario,
        sizing: Sizing,
        down_nodes: frozenset[str],
        pools: dict[str, dict[str, tuple[PoolResult, WaitModel]]],
    ) -> Delay:
        """From the API's end to the ack: the primary's node, then ``WAIT 1``."""
        parts: list[tuple[float, Delay]] = []
        for q, share in self.primary_shares(j, sc, sizing, down_nodes).items():
            if share <= 0:
                continue
            hot = self._hot_sojourn(grid, q, pools[q])
            if hot is None:
                continue
            reg = self.spec.regions[q]
            d = hot.shifted(self.net.rtt_ms(e, q))
            if reg.hot.replicas >= 1:
                svc = self._delay(
                    grid,
                    ("svc", reg.hot.service_time),
                    lambda r=reg: grid.service(r.hot.service_time),
                )
                d = d.plus(svc).shifted(self.net.rtt_ms(q, q))
            parts.append((share, d))
        if not parts:
            return Delay(grid, 0.0, np.zeros(grid.size), 1.0)
        return Delay.mixture(parts)

    def _horizon(
        self, pools: dict[str, dict[str, tuple[PoolResult, WaitModel]]], sizing: Sizing
    ) -> float:
        """How wide a grid the random parts of any row need (a power of two, ms)."""
        worst = 0.0
        for r, ps in pools.items():
            reg = self.spec.regions[r]
            hi = {
                "api": service_high_ms(reg.api.service_time),
                "warm": service_high_ms(reg.warm.service_time),
                "hot": service_high_ms(reg.hot.service_time),
            }
            per = {"api": 0.0, "warm": 0.0, "hot": 0.0}
            for p, w in ps.values():
                if w.stable:
                    tail = (
                        w.cond_mean_ms * math.log(max(w.p_wait, 1e-12) / 1e-7)
                        if w.p_wait > 1e-7
                        else 0.0
                    )
                    per[p.kind] = max(per[p.kind], tail + hi[p.kind])
            worst = max(worst, 2 * per["api"] + per["warm"] + 2 * per["hot"])
        caches = sum(
            service_high_ms(getattr(self.spec.caches, n).service_time) for n, _ in sizing.caches
        )
        rtts = max(self.net.rtt.values(), default=0.0)
        h = worst + caches + 2 * rtts + 1.0
        return float(2.0 ** math.ceil(math.log2(max(h, 8.0))))

    def rows(
        self,
        sc: Scenario,
        sizing: Sizing,
        down_nodes: frozenset[str],
        pools: dict[str, dict[str, tuple[PoolResult, WaitModel]]],
        entries: Iterable[str] | None = None,
    ) -> list[RowResult]:
        """The latency rows of ``sc`` (only those entering ``entries`` when given)."""
        tr = self.traffic(sc)
        grid = Grid.covering(self._horizon(pools, sizing))
        keep = set(entries) if entries is not None else None
        slo = self.spec.slo.latency
        out = []
        for (c, ti), e in sorted(tr.entry.items()):
            t = REQUEST_TYPES[ti]
            if t not in slo or (keep is not None and e not in keep):
                continue
            rate = tr.rate[(c, ti)] * 1000.0
            if e is None:
                out.append(RowResult(t, c, None, rate, math.inf, math.inf, math.inf, 0.0, 0.0))
                continue
            out.append(self._row(grid, sc, sizing, down_nodes, pools, c, ti, e, rate))
        return out

    def _row(
        self,
        grid: Grid,
        sc: Scenario,
        sizing: Sizing,
        down_nodes: frozenset[str],
        pools: dict[str, dict[str, tuple[PoolResult, WaitModel]]],
        c: str,
        ti: int,
        e: str,
        rate: float,
    ) -> RowResult:
        t = REQUEST_TYPES[ti]
        j = self.jur[c]
        reg = self.spec.regions[e]
        legs = self.net.client_ms + (self.net.rtt_ms(c, e) if c != e else 0.0)
        _api_p, api_w = pools[e][f"{e}/api"]
        api = self._sojourn(grid, api_w, reg.api.service_time)
        target = self.spec.slo.latency[t]
        degraded = 0.0
        if ti == 0:
            total = api.plus(self._sourcing(grid, j, e, sc, sizing, down_nodes, pools))
            within = total
        elif ti == 2:
            total = api.plus(self._write_tail(grid, j, e, sc, sizing, down_nodes, pools))
            within = total
        else:
            _warm_p, warm_w = pools[e][f"{e}/warm"]
            stages = [
                self._sourcing(grid, j, e, sc, sizing, down_nodes, pools),
                self._sojourn(grid, warm_w, reg.warm.service_time),
                grid.constant(self.integrity_ms),
                api,
            ]
            total = api
            within = api
            ok = 1.0
            for s, d in zip(STAGES, stages, strict=True):
                b = self.budget[s]
                if math.isfinite(b):
                    total = total.plus(d.capped(b))
                    part = d.truncated(b)
                    ok *= part.mass
                    within = within.plus(part)
                else:
                    total = total.plus(d)
                    within = within.plus(d)
            degraded = max(0.0, 1.0 - ok)
        total = total.shifted(legs)
        within = within.shifted(legs)
        ref = total if target.accept_degraded else within
        attain = ref.cdf(target.p99_ms)
        return RowResult(
            t,
            c,
            e,
            rate,
            total.quantile(0.5),
            total.quantile(0.99),
            total.mean_ms,
            attain,
            degraded,
        )

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self, sizing: Sizing, scenarios: Sequence[Scenario], only: Iterable[str] | None = None
    ) -> Analysis:
        """The model's answer for ``sizing`` in every scenario.

        Args:
            sizing: the candidate.
            scenarios: the scenarios.
            only: restrict pools and latency rows to these (entry) regions; the other
                regions' pools are still computed where a row needs them.
        """
        keep = set(only) if only is not None else set(self.regions)
        out = []
        for sc in scenarios:
            tr = self.traffic(sc)
            # rows entering ``keep``, and every region whose pools those rows visit
            clients = {c for (c, _), e in tr.entry.items() if e in keep}
            jurs = {self.jur[c] for c in clients} | {self.jur[r] for r in keep}
            need = set(keep)
            for j in jurs:
                need |= {
                    r
                    for r in self.regions
                    if r not in sc.down_regions
                    and (
                        self.policy.is_allowed(j, "user_features", r, "store")
                        or self.policy.is_allowed(j, "interactions", r, "store")
                    )
                }
            need -= set(sc.down_regions)
            down = self.crashed(sc, sizing, sorted(need))
            pools = {r: self.pool_waits(sc, r, sizing, down) for r in sorted(need)}
            rows = self.rows(sc, sizing, down, pools, keep if only is not None else None)
            flat = {n: p for r in sorted(keep) for n, (p, _) in pools.get(r, {}).items()}
            hottest = {}
            for r in sorted(keep):
                hot = [(p.load, n) for n, (p, _) in pools.get(r, {}).items() if p.kind == "hot"]
                if hot:
                    load, n = max(hot)
                    hottest[r] = (n, load)
            lookups: dict[str, float] = {}
            hits: dict[str, float] = {}
            for e in sorted(keep):
                if e in sc.down_regions:
                    continue
                hs = self.hits(sc, e, sizing.get(e).api_servers, sizing)
                for j, h in hs.items():
                    lam = tr.reads[e].get(j, 0.0) * 1000.0
                    for i, (name, _) in enumerate(sizing.caches):
                        lookups[name] = lookups.get(name, 0.0) + lam * h.reach[i]
                        hits[name] = hits.get(name, 0.0) + lam * h.level_p[i]
            res = ScenarioResult(sc, flat, rows, lookups, hits, hottest)
            if sc.kind == "normal":
                res.hot_memory_gb = self.hot_memory(sizing, keep)
            out.append(res)
        return Analysis(sizing, out)

    def hot_memory(self, sizing: Sizing, regions: Iterable[str]) -> dict[str, float]:
        """Region -> GiB of user features on its fullest hot node (one value of
        ``workload.value_bytes`` per user and copy; head users key by key, the rest by
        arc share)."""
        vb = self.spec.workload.value_bytes
        out = {}
        normal = Scenario("normal", "normal")
        for r in regions:
            n = sizing.get(r).hot_nodes
            per = dict.fromkeys(node_names(r, n), 0.0)
            for j, pop in self.pops.items():
                cp = self._copies(j, "user_features", r, normal, sizing, frozenset())
                if cp.mode == "none":
                    continue
                ones = np.ones(len(self.classes[j].p))
                self._spread(
                    per,
                    cp,
                    j,
                    ones,
                    self.classes[j].count,
                    len(self.head[j][0]),
                    n,
                    frozenset(),
                    first_only=False,
                    sc=normal,
                    sizing=sizing,
                    down_nodes=frozenset(),
                    op="write",
                )
                del pop
            out[r] = max(per.values(), default=0.0) * vb / float(1 << 30)
        return out
