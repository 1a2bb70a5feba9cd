"""The planner: the cheapest topology that meets every SLO in every scenario.

:func:`plan` answers "how many API servers, warm and hot nodes per region, and how big a
cache, for the least cost?" in three steps:

1. **Screen** the whole search space (:mod:`geoshard.sim.search`) with the analytic
   model (:mod:`geoshard.sim.analytic`). For every combination of the cache dimensions
   and every *headroom* level (the load ceiling lowered by ``headroom_step`` per level:
   more room, lower waits, higher cost, the points of the cost-vs-P99 front), each
   region's pool sizes are chosen on their own: a region's pools carry a load that does
   not depend on other regions' sizes, and its clients' latency depends on its own pools
   (and on the hot tier of the regions holding its data, taken at their input sizes
   while the region is solved, then exactly). The region's combinations are visited in
   order of cost from the smallest sizes each pool's load allows, and the first that
   meets every constraint is its answer: nothing cheaper is skipped. The assembled
   topology is then evaluated as a whole; a region whose constraints the coupling broke
   is solved again against the assembled sizes (at most three rounds).
2. **Confirm** the candidates with the simulator (a faithful slice,
   :func:`~geoshard.sim.run.simulate_spec`), best first and at most ``confirm`` of them,
   until one passes: every scenario, ``replications`` times with different seeds; a
   candidate is confirmed when every run's verdict (:mod:`geoshard.sim.verdict`) passes
   (a lost region's rerouted clients excepted: :func:`waive_rerouted`).
3. **Tighten** (:func:`tighten`): every API and warm pool that might do with one node
   fewer is simulated so in its busiest scenario; a pool whose runs pass loses the node,
   a pool whose run fails keeps it, and that run is the evidence its count is needed. The
   tightened topology is confirmed again in every scenario.

Constraints a candidate must meet in every scenario (those of the verdict, plus memory):

* every pool's offered load plus its sampling margin at or below ``slo.load_ceiling``
  (less the headroom level): the margin is the verdict's two standard errors for the
  confirmation runs' request count, so a plan that meets it passes the verdict of a run
  of that size;
* every request type in every client region within its P50 and P99 targets, with at least
  ``slo.attainment`` of requests within the P99 target (degraded answers count as
  misses unless accepted);
* every hot node's share of the users' features (``workload.value_bytes`` each) within
  its ``memory_gb``;
* with ``beta`` set, square-root staffing: every pool at least ``a + beta sqrt(a)``
  servers for its offered load ``a`` (Netflix's tiers: 2.375, 1.761, 1.16, 1.0).

Cost per hour is the simulator's (:func:`~geoshard.sim.run.cost_per_hour`: API servers,
hot primaries and replicas, warm nodes) plus the L2 and regional caches, priced as Redis
memory at each region's hot-tier rate (``hot_node_hour / memory_gb`` per GiB), since the
spec has no cache price; L1 lives in the API servers' memory and costs nothing extra.

Screening and confirmation run as independent tasks: serially, or on Ray (a local Ray by
default, a cluster by address), with the same answer (:mod:`geoshard.sim.tasks`).
"""

from __future__ import annotations

import copy
import heapq
import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from geoshard.spec import REQUEST_TYPES, Spec

from .analytic import Analysis, AnalyticModel, RegionSizing, ScenarioResult, Sizing
from .queueing import sqrt_staffing
from .run import cost_per_hour
from .scenarios import SCENARIO_KINDS, Scenario, plan_scenarios
from .search import SearchSpace
from .tasks import Runner

__all__ = [
    "Candidate",
    "PlanSettings",
    "Violation",
    "auto_scale",
    "confirm_task",
    "deterministic_part",
    "family_z",
    "margin",
    "plan",
    "plan_cost",
    "screen_task",
    "tighten",
    "trimmable",
    "verify_one_below",
    "violations",
]

_T95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
}
_GIB = float(1 << 30)


@dataclass(frozen=True)
class PlanSettings:
    """How to plan.

    Attributes:
        scenarios: scenario kinds (:data:`~geoshard.sim.scenarios.SCENARIO_KINDS`).
        objective: ``cost`` (cheapest plan) or ``latency`` (lowest worst P99 / target,
            then cost).
        confirm: candidates to confirm with the simulator (0: none).
        replications: simulator runs per candidate and scenario (different seeds).
        scale: the confirmation runs' slice (see ``geoshard simulate --scale``).
        duration_s: the confirmation runs' simulated seconds.
        seed: the first seed.
        beta: square-root staffing beta (None: not required).
        headroom_levels: screens per cache combination, each with the load ceiling
            ``headroom_step`` lower than the last.
        headroom_step: see ``headroom_levels``.
        max_points: combinations a region's solve may evaluate before it gives up.
        margin_z: standard errors of room beyond the verdict's two (:func:`margin`); the
            CLI sets it with :func:`family_z` over the spec's pools.
    """

    scenarios: tuple[str, ...] = SCENARIO_KINDS
    objective: str = "cost"
    confirm: int = 2
    replications: int = 2
    scale: float = 0.01
    duration_s: float = 30.0
    seed: int = 1
    beta: float | None = None
    headroom_levels: int = 4
    headroom_step: float = 0.03
    max_points: int = 200
    margin_z: float = 0.0


def auto_scale(spec: Spec, duration_s: float, requests: float = 300_000.0) -> float:
    """A slice giving about ``requests`` simulated requests per confirmation run (1 for a
    small spec), rounded down to one significant digit."""
    qps = sum(spec.workload.peak_qps.values()) * max(spec.workload.diurnal)
    if qps <= 0:
        return 1.0
    s = min(1.0, requests / (qps * duration_s))
    if s >= 1.0:
        return 1.0
    p = 10.0 ** math.floor(math.log10(s))
    return math.floor(s / p) * p


@dataclass
class Violation:
    """One constraint a candidate misses.

    Attributes:
        kind: ``capacity``, ``staffing``, ``memory``, ``latency``, ``attainment`` or
            ``unserved``.
        scenario: the scenario's name.
        name: the pool, or ``type/client region``.
        region: the region whose sizes can fix it (a pool's region, a row's entry).
        value, limit: what was found and what is allowed.
        message: one line for people.
    """

    kind: str
    scenario: str
    name: str
    region: str
    value: float
    limit: float
    message: str


def family_z(pools: int, alpha: float = 0.05) -> float:
    """``z`` with ``P(N(0,1) > z) = alpha / pools`` (Bonferroni): how many more standard
    errors keep every one of ``pools`` measured loads inside its bound, together, with
    probability at least ``1 - alpha``."""
    p = alpha / max(1, pools)
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * math.erfc(mid / math.sqrt(2.0)) > p:
            lo = mid
        else:
            hi = mid
    return hi


def margin(
    load: float, arrivals_per_s: float, cs2: float, settings: PlanSettings, z: float | None = None
) -> float:
    """The room a pool keeps under its ceiling for the confirmation runs' sampling error.

    A run judges a pool's measured load with two standard errors of room (the verdict);
    the standard error is ``load x sqrt((1 + cs2) / n)`` for ``n = scale x duration x
    arrivals`` joins. A pool whose true load sat exactly two standard errors under the
    ceiling would pass that test only half the time, and a spec has hundreds of pools,
    so the plan keeps ``2 + z`` standard errors, with ``z`` from :func:`family_z` over the
    spec's pools (``settings.margin_z``).
    """
    n = arrivals_per_s * settings.scale * settings.duration_s
    if n <= 0 or not math.isfinite(load):
        return 0.0
    return (2.0 + (settings.margin_z if z is None else z)) * load * math.sqrt((1.0 + cs2) / n)


def violations(
    spec: Spec,
    analysis: Analysis,
    settings: PlanSettings,
    ceiling: float,
    regions: set[str] | None = None,
) -> list[Violation]:
    """Every constraint of the module docstring that ``analysis`` misses.

    Args:
        spec: the spec (SLOs, memory).
        analysis: the model's answer.
        settings: margins and staffing.
        ceiling: the load ceiling (``slo.load_ceiling`` less the headroom).
        regions: judge only the pools of these regions and the rows entering them.
    """
    out: list[Violation] = []
    slo = spec.slo
    for res in analysis.scenarios:
        sc = res.scenario.name
        for name, p in sorted(res.pools.items()):
            if regions is not None and p.region not in regions:
                continue
            if p.arrivals_per_s <= 0 and p.servers >= 1:
                continue
            m = margin(p.load, p.arrivals_per_s, p.cs2, settings)
            if not (p.load + m <= ceiling):
                out.append(
                    Violation(
                        "capacity",
                        sc,
                        name,
                        p.region,
                        p.load,
                        ceiling,
                        (
                            f"{name} has no server left in {sc} ({p.arrivals_per_s:,.0f} "
                            "requests/s); it needs at least one more node"
                            if p.servers < 1
                            else f"{name} at {_pct(p.load)} offered load"
                            + (f" (+{_pct(m)} sampling margin)" if m else "")
                            + f" > {_pct(ceiling)} in {sc}"
                        ),
                    )
                )
            elif settings.beta is not None:
                need = sqrt_staffing(p.offered, settings.beta)
                if p.servers < need:
                    out.append(
                        Violation(
                            "staffing",
                            sc,
                            name,
                            p.region,
                            p.servers,
                            need,
                            f"{name} has {p.servers} servers for {p.offered:.1f} Erlangs in {sc}; "
                            f"square-root staffing with beta {settings.beta:g} needs {need}",
                        )
                    )
        for row in res.rows:
            entry = row.entry or ""
            if regions is not None and entry not in regions:
                continue
            if row.client in res.scenario.down_regions:
                continue  # rerouted: their latency carries an RTT no size changes (reported)
            target = slo.latency[row.type]
            label = f"{row.type}/{row.client}"
            if row.entry is None:
                out.append(
                    Violation(
                        "unserved",
                        sc,
                        label,
                        row.client,
                        0.0,
                        1.0,
                        f"{row.type} from {row.client}: no region may serve it in {sc}",
                    )
                )
                continue
            for q, val, lim in (
                ("p50", row.p50_ms, target.p50_ms),
                ("p99", row.p99_ms, target.p99_ms),
            ):
                if not (val <= lim):
                    out.append(
                        Violation(
                            "latency",
                            sc,
                            label,
                            entry,
                            val,
                            lim,
                            f"{row.type} from {row.client} (entering {entry}): "
                            f"{q} {_ms(val)} > {lim:g} ms in {sc}",
                        )
                    )
            if row.attainment < slo.attainment:
                out.append(
                    Violation(
                        "attainment",
                        sc,
                        label,
                        entry,
                        row.attainment,
                        slo.attainment,
                        f"{row.type} from {row.client} (entering {entry}): "
                        f"{row.attainment:.2%} within {target.p99_ms:g} ms "
                        f"< {slo.attainment:.2%} in {sc}"
                        + (f" ({row.degraded:.2%} degraded)" if row.degraded > 1e-4 else ""),
                    )
                )
        for r, gb in sorted(res.hot_memory_gb.items()):
            if regions is not None and r not in regions:
                continue
            have = spec.regions[r].hot.memory_gb
            if gb > have:
                out.append(
                    Violation(
                        "memory",
                        sc,
                        f"{r}/hot",
                        r,
                        gb,
                        have,
                        f"{r}'s fullest hot node holds {gb:.1f} GiB of user "
                        f"features > memory_gb {have:g}",
                    )
                )
    return out


def _pct(x: float) -> str:
    return f"{x:.1%}" if math.isfinite(x) else "overloaded (inf)"


def _ms(x: float) -> str:
    return f"{x:.1f} ms" if math.isfinite(x) else "unbounded"


def plan_cost(spec: Spec, sizing: Sizing) -> dict[str, float]:
    """USD per hour of a sizing: the simulator's cost plus the shared cache levels."""
    sized = sizing.apply(spec)
    base = cost_per_hour(sized)
    caches = 0.0
    for name in ("l2", "regional"):
        cap = sizing.cache(name)
        if cap is None:
            continue
        gib = cap * spec.workload.value_bytes / _GIB
        for reg in sized.regions.values():
            caches += gib * reg.costs.hot_node_hour / reg.hot.memory_gb
    return {
        "api": base["api"],
        "hot": base["hot"],
        "warm": base["warm"],
        "caches": round(caches, 6),
        "total": round(base["total"] + caches, 6),
    }


def _region_cost(spec: Spec, region: str, s: RegionSizing) -> float:
    reg = spec.regions[region]
    c = reg.costs
    return (
        c.api_server_hour * s.api_servers
        + c.hot_node_hour * s.hot_nodes * (1 + reg.hot.replicas)
        + c.warm_node_hour * s.warm_nodes
    )


# --------------------------------------------------------------------------- screening


@dataclass
class Candidate:
    """One screened candidate (a cache combination at one headroom level).

    Attributes:
        index: its position in the screen (cache combination x headroom level).
        caches: the searched cache capacities.
        headroom: how far below the load ceiling its pools are sized.
        sizing: every region's sizes and the cache capacities.
        feasible: the model says it meets every constraint.
        cost: USD per hour (:func:`plan_cost`).
        worst_p99_ratio: the highest P99 / target over types, regions and scenarios.
        worst_row: where that is.
        violations: why it is not feasible (the first few), or empty.
        binding: for a feasible one, per region the pool closest to its ceiling.
        points: combinations evaluated by the regions' solves.
    """

    index: int
    caches: dict[str, float]
    headroom: float
    sizing: Sizing
    feasible: bool
    cost: dict[str, float]
    worst_p99_ratio: float
    worst_row: str
    violations: list[str]
    binding: list[str] = field(default_factory=list)
    points: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON)."""
        d = asdict(self)
        d["sizing"] = {
            "regions": {r: s._asdict() for r, s in self.sizing.regions},
            "caches": dict(self.sizing.caches),
        }
        return d


_MODELS: dict[tuple[str, int], tuple[Spec, AnalyticModel]] = {}


def _model(spec_json: str, seed: int) -> tuple[Spec, AnalyticModel]:
    """One model per spec and seed per process (Ray workers reuse theirs across tasks)."""
    key = (spec_json, seed)
    got = _MODELS.get(key)
    if got is None:
        if len(_MODELS) > 4:
            _MODELS.clear()
        spec = Spec.model_validate_json(spec_json)
        got = _MODELS[key] = (spec, AnalyticModel(spec, seed))
    return got


def _options(space: SearchSpace, sizes: RegionSizing, kind: str) -> list[tuple[int, int]]:
    count_field = {"api": "api_servers", "warm": "warm_nodes", "hot": "hot_nodes"}[kind]
    dim = {"api": "api.servers", "warm": "warm.nodes", "hot": "hot.nodes"}[kind]
    counts = [int(v) for v in space.values(dim)] or [getattr(sizes, count_field)]
    workers = [int(v) for v in space.values(f"{kind}.workers")] or [
        getattr(sizes, f"{kind}_workers")
    ]
    return [(n, w) for n in counts for w in workers]


def _set(sizes: RegionSizing, kind: str, opt: tuple[int, int]) -> RegionSizing:
    n, w = opt
    if kind == "api":
        return sizes._replace(api_servers=n, api_workers=w)
    if kind == "warm":
        return sizes._replace(warm_nodes=n, warm_workers=w)
    return sizes._replace(hot_nodes=n, hot_workers=w)


def _pool_ok(v: Violation, kind: str, region: str) -> bool:
    """True when ``v`` is not about ``region``'s pool of ``kind``."""
    if v.region != region or v.kind not in ("capacity", "staffing", "memory"):
        return True
    pool_kind = v.name.split("/")[-1]
    pool_kind = "hot" if pool_kind.startswith("hot") else pool_kind
    return pool_kind != kind


@dataclass
class _RegionAnswer:
    sizes: RegionSizing | None
    points: int
    why: list[str]


def _solve_region(
    spec: Spec,
    model: AnalyticModel,
    base: Sizing,
    region: str,
    space: SearchSpace,
    scenarios: Sequence[Scenario],
    settings: PlanSettings,
    ceiling: float,
) -> _RegionAnswer:
    """The cheapest sizes of one region's pools meeting every constraint it owns."""
    sizes0 = base.get(region)
    only = {region}
    lists: dict[str, list[tuple[int, int]]] = {}
    why: list[str] = []
    for kind in ("api", "warm", "hot"):
        opts = _options(space, sizes0, kind)
        probe = sizes0
        if kind == "hot":  # the fewest API servers: the most L1 hits, the least hot load
            probe = _set(probe, "api", min(lists["api"] or _options(space, sizes0, "api")))
        # per worker count, the smallest node count whose pools meet their own
        # constraints, and every count above it (a pool's load only falls with more nodes)
        kept: list[tuple[int, int]] = []
        for workers in sorted({w for _, w in opts}):
            counts = sorted(n for n, w in opts if w == workers)
            for i, n in enumerate(counts):
                trial = base.with_region(region, _set(probe, kind, (n, workers)))
                an = _pools_only(model, trial, scenarios, region, kind)
                bad = [
                    v
                    for v in violations(spec, an, settings, ceiling, only)
                    if not _pool_ok(v, kind, region)
                ]
                if not bad:
                    kept.extend((m, workers) for m in counts[i:])
                    break
                why = [v.message for v in bad[:3]]
        kept.sort(key=lambda o: (_region_cost(spec, region, _set(sizes0, kind, o)), o))
        lists[kind] = kept
        if not kept:
            dim = {"api": "api.servers", "warm": "warm.nodes", "hot": "hot.nodes"}[kind]
            top = opts[-1]
            searched = bool(space.values(dim) or space.values(f"{kind}.workers"))
            lead = (
                f"even at the search's largest {kind} size ({top[0]} x {top[1]} workers)"
                if searched
                else f"{dim} is not searched (fixed at {top[0]})"
            )
            return _RegionAnswer(None, 0, [f"{region}: {lead}: " + "; ".join(why)])
    kinds = ("api", "warm", "hot")

    def cost(ix: tuple[int, ...]) -> float:
        s = sizes0
        for k, i in zip(kinds, ix, strict=True):
            s = _set(s, k, lists[k][i])
        return _region_cost(spec, region, s)

    start: tuple[int, int, int] = (0, 0, 0)
    heap: list[tuple[float, tuple[int, int, int]]] = [(cost(start), start)]
    seen = {start}
    points = 0
    last: list[Violation] = []
    while heap and points < settings.max_points:
        _, ix = heapq.heappop(heap)
        s = sizes0
        for k, i in zip(kinds, ix, strict=True):
            s = _set(s, k, lists[k][i])
        trial = base.with_region(region, s)
        points += 1
        an = model.evaluate(trial, scenarios, only=only)
        bad = violations(spec, an, settings, ceiling, only)
        if not bad:
            return _RegionAnswer(s, points, [])
        last = bad
        for d in range(3):
            nxt = (ix[0] + (d == 0), ix[1] + (d == 1), ix[2] + (d == 2))
            if nxt[d] < len(lists[kinds[d]]) and nxt not in seen:
                seen.add(nxt)
                heapq.heappush(heap, (cost(nxt), nxt))
    reason = [v.message for v in last[:3]]
    stop = (
        "searched every combination the pools' loads allow"
        if not heap
        else f"stopped after {points} combinations"
    )
    return _RegionAnswer(None, points, [f"{region}: {stop}; still: " + "; ".join(reason)])


def _pools_only(
    model: AnalyticModel, sizing: Sizing, scenarios: Sequence[Scenario], region: str, kind: str
) -> Analysis:
    """The pools of one region (no latency rows): the pre-filter of a pool's sizes."""
    out = []
    for sc in scenarios:
        down = model.crashed(sc, sizing, [region]) if kind == "hot" else frozenset()
        pools = model.pool_waits(sc, region, sizing, down, kinds=(kind,))
        flat = {n: p for n, (p, _) in pools.items()}
        res = ScenarioResult(sc, flat, [], {}, {}, {})
        if kind == "hot" and sc.kind == "normal":
            res.hot_memory_gb = model.hot_memory(sizing, [region])
        out.append(res)
    return Analysis(sizing, out)


def _worst_row(spec: Spec, analysis: Analysis) -> tuple[float, str]:
    worst, where = 0.0, ""
    for res in analysis.scenarios:
        for row in res.rows:
            if row.client in res.scenario.down_regions:
                continue  # rerouted: reported, not gated
            t = spec.slo.latency[row.type].p99_ms
            r = row.p99_ms / t if row.entry is not None else math.inf
            if r > worst:
                worst, where = r, f"{row.type} from {row.client} in {res.scenario.name}"
    return worst, where


def _binding(analysis: Analysis, regions: Sequence[str], ceiling: float) -> list[str]:
    out = []
    for r in regions:
        best: tuple[float, str, str] | None = None
        for res in analysis.scenarios:
            for name, p in res.pools.items():
                if p.region == r and p.arrivals_per_s > 0 and (best is None or p.load > best[0]):
                    best = (p.load, name, res.scenario.name)
        if best is not None:
            out.append(f"{best[1]} at {best[0]:.1%} in {best[2]} (ceiling {ceiling:.0%})")
    return out


def screen_task(
    spec_json: str,
    space: SearchSpace,
    settings: PlanSettings,
    combo: dict[str, float],
    combo_index: int,
) -> list[Candidate]:
    """Screen one cache combination at every headroom level (one task).

    Returns one :class:`Candidate` per headroom level.
    """
    spec, model = _model(spec_json, settings.seed)
    scenarios, _ = plan_scenarios(spec, settings.scenarios, model.router)
    base = Sizing.of(spec).with_caches({k.split(".")[0]: v for k, v in combo.items()})
    out = []
    for h in range(settings.headroom_levels):
        headroom = h * settings.headroom_step
        ceiling = spec.slo.load_ceiling - headroom
        sizing = base
        reasons: list[str] = []
        points = 0
        todo = list(space.regions)
        for _round in range(3):
            reasons = []
            for r in todo:
                ans = _solve_region(spec, model, sizing, r, space, scenarios, settings, ceiling)
                points += ans.points
                if ans.sizes is None:
                    reasons.extend(ans.why)
                else:
                    sizing = sizing.with_region(r, ans.sizes)
            if reasons:
                break
            full = model.evaluate(sizing, scenarios)
            bad = violations(spec, full, settings, ceiling)
            todo = sorted({v.region for v in bad if v.region in space.regions})
            if not bad:
                break
            reasons = [v.message for v in bad[:5]]
            if not todo:  # a region the plan does not size misses a constraint
                reasons = [f"{v.message} ({v.region} is not in --regions)" for v in bad[:5]]
                break
        feasible = not reasons
        analysis = model.evaluate(sizing, scenarios)
        worst, where = _worst_row(spec, analysis)
        out.append(
            Candidate(
                combo_index * settings.headroom_levels + h,
                dict(combo),
                headroom,
                sizing,
                feasible,
                plan_cost(spec, sizing),
                worst,
                where,
                reasons[:5],
                _binding(analysis, list(space.regions), ceiling) if feasible else [],
                points,
            )
        )
    return out


def cache_combos(space: SearchSpace) -> list[dict[str, float]]:
    """Every combination of the searched cache dimensions (one empty one when none)."""
    dims = [(n, space.values(n)) for n in space.cache_dims]
    return [
        dict(zip([n for n, _ in dims], vals, strict=True))
        for vals in itertools.product(*[v for _, v in dims])
    ] or [{}]


def rank(candidates: Sequence[Candidate], objective: str) -> list[Candidate]:
    """Feasible candidates, best first (distinct sizings only)."""
    feas = [c for c in candidates if c.feasible]
    if objective == "latency":
        feas.sort(key=lambda c: (round(c.worst_p99_ratio, 9), c.cost["total"], c.index))
    else:
        feas.sort(key=lambda c: (round(c.cost["total"], 6), c.worst_p99_ratio, c.index))
    out, seen = [], set()
    for c in feas:
        if c.sizing not in seen:
            seen.add(c.sizing)
            out.append(c)
    return out


def pareto(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The feasible candidates no other beats on both cost and worst P99 / target."""
    feas = sorted(
        (c for c in candidates if c.feasible),
        key=lambda c: (c.cost["total"], c.worst_p99_ratio, c.index),
    )
    out: list[Candidate] = []
    best = math.inf
    for c in feas:
        if c.worst_p99_ratio < best - 1e-12:
            out.append(c)
            best = c.worst_p99_ratio
    return out


def binding_summary(candidates: Sequence[Candidate]) -> list[str]:
    """Why nothing in the space is feasible: the reasons of the roomiest candidates."""
    low = min((c.headroom for c in candidates), default=0.0)
    reasons: dict[str, int] = {}
    for c in candidates:
        if c.headroom == low:
            for r in c.violations:
                reasons[r] = reasons.get(r, 0) + 1
    return sorted(reasons, key=lambda r: (-reasons[r], r))[:8]


# --------------------------------------------------------------------------- confirmation


def confirm_task(
    spec_json: str,
    scenario: Scenario,
    crashed: dict[str, str],
    seed: int,
    scale: float,
    duration_s: float,
) -> dict[str, Any]:
    """Simulate one candidate in one scenario with one seed (one task).

    Returns the verdict and what the confirmation table shows: per request type and
    client region P50, P99 and attainment; per pool the peak offered load and its
    standard error; cache hit ratios; arrivals.
    """
    from .run import simulate_spec
    from .scenarios import scenario_spec

    spec = Spec.model_validate_json(spec_json)
    run_spec = scenario_spec(spec, scenario, duration_s, crashed)
    result, _ = simulate_spec(run_spec, seed=seed, duration_s=duration_s, scale=scale, workers=1)
    m = result["metrics"]
    gate, waived = waive_rerouted(result["verdict"]["failures"], scenario)
    rows = {}
    for t, per in m["requests"].items():
        for r, v in per.items():
            if r != "all":
                rows[f"{t}/{r}"] = {
                    "p50_ms": v["p50_ms"],
                    "p99_ms": v["p99_ms"],
                    "attainment": v["slo_attainment"],
                    "count": v["count"],
                }
    pools = {
        n: {
            "load": v["peak_offered_load"],
            "se": v["peak_offered_load_se"],
            "wait_ms": v["wait_ms"],
            "wait_p99_ms": v["wait_p99_ms"],
        }
        for n, v in m["nodes"].items()
    }
    return {
        "scenario": scenario.name,
        "seed": seed,
        "passed": not gate,
        "rerouted": sorted(scenario.down_regions),
        "failures": [f["message"] for f in gate][:10],
        "waived": [f["message"] for f in waived][:10],
        "rows": rows,
        "pools": pools,
        "caches": {k: v["hit_ratio"] for k, v in m["caches"].items()},
        "arrivals": m["arrivals"],
        "wall_s": result["machine"]["wall_s"],
    }


def waive_rerouted(
    failures: Sequence[dict[str, Any]], scenario: Scenario
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split a verdict's failures into those that count and those waived: in a region
    loss, the latency rows of the lost regions' clients (and the ``all`` rows that include
    them), whose requests cross to another region: no size removes that RTT. Capacity,
    residency and every other client's latency still count."""
    if scenario.kind != "region-loss":
        return list(failures), []
    gate: list[dict[str, Any]] = []
    waived: list[dict[str, Any]] = []
    for f in failures:
        rerouted = f["kind"] in ("latency", "attainment") and (
            f["region"] in scenario.down_regions or f["region"] == "all"
        )
        (waived if rerouted else gate).append(f)
    return gate, waived


def ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of a 95 % t confidence interval (0 for one value)."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    mean = statistics.fmean(vals)
    if len(vals) < 2:
        return mean, 0.0
    t = _T95.get(len(vals) - 1, 1.96)
    return mean, t * statistics.stdev(vals) / math.sqrt(len(vals))


def summarize_confirmation(spec: Spec, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per scenario: runs passed, worst P99 / target and peak pool load with 95 % CIs."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["scenario"], []).append(r)
    out = {}
    for sc, rs in by.items():
        ratios, loads = [], []
        worst_row, worst_pool = "", ""
        for r in rs:
            best = (0.0, "")
            for name, v in r["rows"].items():
                t = spec.slo.latency.get(name.split("/")[0])
                if name.split("/")[1] in r.get("rerouted", ()):
                    continue  # a lost region's clients: reported, not gated
                if t is not None and v["count"]:
                    best = max(best, (v["p99_ms"] / t.p99_ms, name))
            ratios.append(best[0])
            worst_row = best[1]
            top = max(((v["load"], n) for n, v in r["pools"].items()), default=(0.0, ""))
            loads.append(top[0])
            worst_pool = top[1]
        rm, rh = ci95(ratios)
        lm, lh = ci95(loads)
        out[sc] = {
            "runs": len(rs),
            "passed": sum(1 for r in rs if r["passed"]),
            "worst_p99_ratio": rm,
            "worst_p99_ratio_ci95": rh,
            "worst_row": worst_row,
            "peak_load": lm,
            "peak_load_ci95": lh,
            "peak_pool": worst_pool,
            "failures": sorted({f for r in rs for f in r["failures"]})[:10],
        }
    return out


def pool_table(
    spec: Spec, input_sizing: Sizing, analysis: Analysis, settings: PlanSettings
) -> list[dict[str, Any]]:
    """The answer per region and pool: nodes (input -> plan), peak load and where, the
    sampling margin, predicted P99 wait, and cost per hour."""
    rows = []
    for region, s in analysis.sizing.regions:
        s0 = input_sizing.get(region)
        reg = spec.regions[region]
        c = reg.costs
        for kind, n, n0, workers, unit in (
            ("api", s.api_servers, s0.api_servers, s.api_workers, c.api_server_hour),
            ("warm", s.warm_nodes, s0.warm_nodes, s.warm_workers, c.warm_node_hour),
            (
                "hot",
                s.hot_nodes,
                s0.hot_nodes,
                s.hot_workers,
                c.hot_node_hour * (1 + reg.hot.replicas),
            ),
        ):
            peak: tuple[float, str, float, float, str, float] = (-1.0, "", 0.0, 0.0, "", 0.0)
            for res in analysis.scenarios:
                for name, p in res.pools.items():
                    if p.region != region or p.kind != kind:
                        continue
                    mg = margin(p.load, p.arrivals_per_s, p.cs2, settings)
                    if p.load > peak[0]:
                        peak = (p.load, res.scenario.name, p.wait_p99_ms, mg, name, p.p_wait)
            rows.append(
                {
                    "region": region,
                    "pool": kind,
                    "nodes": n,
                    "input_nodes": n0,
                    "workers": workers,
                    "peak_load": peak[0] if peak[0] >= 0 else 0.0,
                    "peak_scenario": peak[1],
                    "busiest": peak[4],
                    "margin": peak[3],
                    "wait_p99_ms": peak[2],
                    "p_wait": peak[5],
                    "cost_per_hour": round(n * unit, 6),
                }
            )
    return rows


def latency_table(spec: Spec, analysis: Analysis) -> list[dict[str, Any]]:
    """Per request type and client region: the predicted P50 / P99 in the worst scenario."""
    worst: dict[tuple[str, str], dict[str, Any]] = {}
    for res in analysis.scenarios:
        for row in res.rows:
            if row.client in res.scenario.down_regions:
                continue  # rerouted (see rerouted_table)
            key = (row.type, row.client)
            cur = worst.get(key)
            if cur is None or row.p99_ms > cur["p99_ms"]:
                worst[key] = {
                    "type": row.type,
                    "client": row.client,
                    "entry": row.entry,
                    "scenario": res.scenario.name,
                    "p50_ms": row.p50_ms,
                    "p99_ms": row.p99_ms,
                    "attainment": row.attainment,
                    "target_p99_ms": spec.slo.latency[row.type].p99_ms,
                }
    order = {t: i for i, t in enumerate(REQUEST_TYPES)}
    return [
        worst[k] for k in sorted(worst, key=lambda k: (order[k[0]], list(spec.regions).index(k[1])))
    ]


def rerouted_table(spec: Spec, analysis: Analysis) -> list[dict[str, Any]]:
    """The lost regions' clients in region-loss scenarios: where they enter and their
    predicted latency (reported; not gated, since the extra RTT is no size's to fix)."""
    out = []
    for res in analysis.scenarios:
        for row in res.rows:
            if row.client in res.scenario.down_regions:
                out.append(
                    {
                        "type": row.type,
                        "client": row.client,
                        "entry": row.entry,
                        "scenario": res.scenario.name,
                        "p50_ms": row.p50_ms,
                        "p99_ms": row.p99_ms,
                        "target_p99_ms": spec.slo.latency[row.type].p99_ms,
                    }
                )
    return out


def crashed_nodes(model: AnalyticModel, sizing: Sizing) -> dict[str, str]:
    """Region -> the hot node the n-1 scenario crashes (the model's hottest)."""
    out = {}
    for r in model.regions:
        if sizing.get(r).hot_nodes >= 2:
            n = model.hottest(r, sizing)
            if n is not None:
                out[r] = n
    return out


# --------------------------------------------------------------------------- the plan


def trimmable(
    sizing: Sizing, analysis: Analysis, space: SearchSpace, settings: PlanSettings
) -> list[tuple[str, Scenario]]:
    """API and warm pools of the searched regions that might do with one node fewer: their
    dimension is searched, one fewer is a value of it, and one fewer still leaves a node
    in their busiest scenario. Returns ``(pool, busiest scenario)``."""
    out = []
    for region in space.regions:
        s = sizing.get(region)
        for kind, dim, n in (
            ("api", "api.servers", s.api_servers),
            ("warm", "warm.nodes", s.warm_nodes),
        ):
            if float(n - 1) not in space.values(dim):
                continue
            name = f"{region}/{kind}"
            peak: tuple[float, Scenario] | None = None
            for res in analysis.scenarios:
                p = res.pools.get(name)
                if p is not None and p.arrivals_per_s > 0 and (peak is None or p.load > peak[0]):
                    peak = (p.load, res.scenario)
            if peak is None:
                continue
            if n - 1 - (1 if peak[1].minus_one else 0) >= 1:
                out.append((name, peak[1]))
    del settings
    return out


def _minus(sizing: Sizing, pool: str) -> Sizing:
    region, kind = pool.split("/")
    s = sizing.get(region)
    s = (
        s._replace(api_servers=s.api_servers - 1)
        if kind == "api"
        else s._replace(warm_nodes=s.warm_nodes - 1)
    )
    return sizing.with_region(region, s)


def _blames(run: dict[str, Any], pool: str) -> list[str]:
    """The failures of a one-below run that concern ``pool`` (its capacity, or a latency
    row of its region)."""
    region = pool.split("/")[0]
    return [f for f in run["failures"] if f.startswith(pool + " ") or (" in " + region + ":") in f]


def _sim_jobs(
    spec: Spec,
    model: AnalyticModel,
    sizing: Sizing,
    scenarios: Sequence[Scenario],
    settings: PlanSettings,
    seeds: Sequence[int],
) -> list[tuple[Any, ...]]:
    sjson = sizing.apply(spec).model_dump_json()
    crashed = crashed_nodes(model, sizing)
    return [
        (sjson, sc, crashed if sc.minus_one else {}, seed, settings.scale, settings.duration_s)
        for sc in scenarios
        for seed in seeds
    ]


def _count(sizing: Sizing, pool: str) -> int:
    region, kind = pool.split("/")
    s = sizing.get(region)
    return s.api_servers if kind == "api" else s.warm_nodes


def tighten(
    spec: Spec,
    model: AnalyticModel,
    sizing: Sizing,
    space: SearchSpace,
    settings: PlanSettings,
    scenarios: Sequence[Scenario],
    runner: Runner,
    progress: Callable[[int, int], None] | None,
) -> tuple[Sizing, list[dict[str, Any]]]:
    """Take nodes off the confirmed plan's API and warm pools while the simulator accepts it.

    The sampling margin keeps a pool a little under what one confirmation run would
    accept. Rounds alternate between the API pools and the warm pools: in a round every
    open pool of that kind, one per region, has one node fewer in a single trial topology,
    simulated in each of those pools' busiest scenarios (``replications`` runs). A pool
    whose runs show no failure of its own (its capacity, or a latency row of its region)
    loses the node and stays open; a pool with such a failure keeps it and closes. Since a
    round changes one pool per region, a region's failure is its one pool's. Returns the
    tightened sizing (the caller confirms it in every scenario, then checks every kept
    count alone with :func:`verify_one_below`) and the evidence per pool.
    """
    analysis = model.evaluate(sizing, scenarios)
    open_ = dict(trimmable(sizing, analysis, space, settings))
    evidence: dict[str, dict[str, Any]] = {}
    seeds = [settings.seed + k for k in range(settings.replications)]
    for _round in range(8):
        if not open_:
            break
        kind = ("api", "warm")[_round % 2]
        mine = {p: sc for p, sc in open_.items() if p.endswith("/" + kind)}
        if not mine:
            continue
        trial = sizing
        for pool in mine:
            trial = _minus(trial, pool)
        by_sc = list({sc.name: sc for sc in mine.values()}.values())
        runs = runner.map(
            confirm_task,
            _sim_jobs(spec, model, trial, by_sc, settings, seeds),
            progress,
        )
        for pool, sc in mine.items():
            blamed = [(r, _blames(r, pool)) for r in runs if r["scenario"] == sc.name]
            failed = [(r, b) for r, b in blamed if b]
            n = _count(sizing, pool)
            if failed:
                r, b = failed[0]
                evidence[pool] = {
                    "pool": pool,
                    "nodes": n,
                    "one_below": n - 1,
                    "scenario": sc.name,
                    "seed": r["seed"],
                    "failed": True,
                    "failure": b[0],
                    "together": sorted(set(mine) - {pool}),
                }
                del open_[pool]
                continue
            sizing = _minus(sizing, pool)
            evidence[pool] = {
                "pool": pool,
                "nodes": n - 1,
                "one_below": n - 1,
                "scenario": sc.name,
                "seed": None,
                "failed": False,
                "failure": f"{n - 1} passed every run; the node was taken off",
                "together": [],
            }
            dim = "api.servers" if kind == "api" else "warm.nodes"
            if float(n - 2) not in space.values(dim) or n - 2 - (1 if sc.minus_one else 0) < 1:
                del open_[pool]
    return sizing, [evidence[k] for k in sorted(evidence)]


def verify_one_below(
    spec: Spec,
    model: AnalyticModel,
    sizing: Sizing,
    evidence: list[dict[str, Any]],
    scenarios: Sequence[Scenario],
    settings: PlanSettings,
    runner: Runner,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Check every kept count alone: the final plan with only that pool one node fewer, in
    the scenario and with the seed of the run that failed (one run each, at once).

    A count whose lone run also fails is shown to be needed (``verified``); one whose lone
    run passes failed only together with other regions' pools, and says so (its node is
    kept: one passing run is not a confirmation). Updates ``evidence`` in place.
    """
    by_name = {sc.name: sc for sc in scenarios}
    todo = [e for e in evidence if e["failed"] and _count(sizing, e["pool"]) == e["nodes"]]
    jobs = [
        _sim_jobs(
            spec,
            model,
            _minus(sizing, e["pool"]),
            [by_name[e["scenario"]]],
            settings,
            [e["seed"]],
        )[0]
        for e in todo
    ]
    runs = runner.map(confirm_task, jobs, progress)
    for e, r in zip(todo, runs, strict=True):
        own = _blames(r, e["pool"])
        e["verified"] = bool(own or not r["passed"])
        if own:
            e["failure"] = own[0]
        elif not r["passed"]:
            e["failure"] = r["failures"][0]
        else:
            e["failed"] = False
            e["failure"] = (
                f"{e['one_below']} alone passed (seed {e['seed']}); it failed only with "
                f"{', '.join(e['together'])} one fewer too, so the count stands"
            )


def plan(
    spec: Spec,
    space: SearchSpace,
    settings: PlanSettings,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Screen, confirm, tighten and choose (see the module docstring).

    Args:
        spec: the input spec.
        space: the search space.
        settings: how to plan.
        workers: 1 serial; 0 or N on a local Ray (:func:`geoshard.sim.tasks.run_tasks`).
        ray_address: an existing Ray cluster.
        on_progress: called with (phase, tasks done, tasks) as tasks finish.

    Returns:
        The plan as plain data (what ``plan.json`` holds, without ``machine``).
    """
    with Runner(workers, ray_address) as runner:
        return _plan(spec, space, settings, runner, on_progress)


def _plan(
    spec: Spec,
    space: SearchSpace,
    settings: PlanSettings,
    runner: Runner,
    on_progress: Callable[[str, int, int], None] | None,
) -> dict[str, Any]:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    spec_json = spec.model_dump_json()
    model = AnalyticModel(spec, settings.seed)
    scenarios, notes = plan_scenarios(spec, settings.scenarios, model.router)
    combos = cache_combos(space)

    def progress(phase: str) -> Callable[[int, int], None] | None:
        if on_progress is None:
            return None
        return lambda done, total: on_progress(phase, done, total)

    screened = runner.map(
        screen_task,
        [(spec_json, space, settings, c, i) for i, c in enumerate(combos)],
        progress("screen"),
    )
    candidates = sorted((c for batch in screened for c in batch), key=lambda c: c.index)
    timings["screen_s"] = time.perf_counter() - t0
    ranked = rank(candidates, settings.objective)
    front = pareto(candidates)
    confirmation: list[dict[str, Any]] = []
    seeds = [settings.seed + k for k in range(settings.replications)]
    chosen: Candidate | None = None
    t1 = time.perf_counter()
    for k, c in enumerate(ranked[: settings.confirm]):
        runs = runner.map(
            confirm_task,
            _sim_jobs(spec, model, c.sizing, scenarios, settings, seeds),
            progress(f"confirm #{k + 1}"),
        )
        ok = all(r["passed"] for r in runs)
        confirmation.append(
            {
                "index": c.index,
                "cost": c.cost,
                "confirmed": ok,
                "summary": summarize_confirmation(spec, runs),
                "runs": runs,
            }
        )
        if ok:
            chosen = c
            break
    if not settings.confirm and ranked:
        chosen = ranked[0]
    timings["confirm_s"] = time.perf_counter() - t1
    final = chosen.sizing if chosen is not None else None
    evidence: list[dict[str, Any]] = []
    tightened: dict[str, Any] | None = None
    if chosen is not None and settings.confirm:
        t2 = time.perf_counter()
        trimmed, evidence = tighten(
            spec,
            model,
            chosen.sizing,
            space,
            settings,
            scenarios,
            runner,
            progress("one below"),
        )
        if trimmed != chosen.sizing:
            runs = runner.map(
                confirm_task,
                _sim_jobs(spec, model, trimmed, scenarios, settings, seeds),
                progress("confirm tightened"),
            )
            ok = all(r["passed"] for r in runs)
            tightened = {
                "cost": plan_cost(spec, trimmed),
                "confirmed": ok,
                "summary": summarize_confirmation(spec, runs),
                "runs": runs,
            }
            if ok:
                final = trimmed
            else:  # keep the confirmed counts; the evidence says so
                for e in evidence:
                    if not e["failed"]:
                        e["nodes"] += 1
                        e["failure"] += (
                            "; but the tightened plan failed a confirmation run, "
                            "so the confirmed count stands"
                        )
        if final is not None:
            verify_one_below(
                spec,
                model,
                final,
                evidence,
                scenarios,
                settings,
                runner,
                progress("one below alone"),
            )
        timings["tighten_s"] = time.perf_counter() - t2
    chosen_out: dict[str, Any] | None = None
    if chosen is not None and final is not None:
        analysis = model.evaluate(final, scenarios)
        ceiling = spec.slo.load_ceiling - (chosen.headroom if final == chosen.sizing else 0.0)
        chosen_out = {
            "index": chosen.index,
            "confirmed": bool(settings.confirm),
            "tightened": final != chosen.sizing,
            "cost": plan_cost(spec, final),
            "headroom": chosen.headroom,
            "caches": dict(final.caches),
            "sizing": {
                "regions": {r: s._asdict() for r, s in final.regions},
                "caches": dict(final.caches),
            },
            "pools": pool_table(spec, Sizing.of(spec), analysis, settings),
            "latency": latency_table(spec, analysis),
            "rerouted": rerouted_table(spec, analysis),
            "binding": _binding(analysis, list(space.regions), ceiling),
            "hit_ratios": {lvl: _hit(analysis, lvl) for lvl, _ in final.caches},
            "hottest": {
                r: n for res in analysis.scenarios[:1] for r, (n, _) in res.hottest.items()
            },
            "crashed": crashed_nodes(model, final),
        }
    timings["total_s"] = time.perf_counter() - t0
    executor = runner.executor
    return {
        "schema_version": 1,
        "spec_name": spec.name,
        "search": space.text,
        "dims": {n: list(v) for n, v in space.dims},
        "regions": list(space.regions),
        "space_size": space.size,
        "settings": asdict(settings),
        "scenarios": [s.name for s in scenarios],
        "scenario_objects": [
            {
                "name": s.name,
                "kind": s.kind,
                "down_regions": sorted(s.down_regions),
                "multipliers": [list(m) for m in s.multipliers],
                "minus_one": s.minus_one,
            }
            for s in scenarios
        ],
        "scenario_notes": notes,
        "candidates": [c.as_dict() for c in candidates],
        "ranked": [c.index for c in ranked],
        "pareto": [c.index for c in front],
        "confirmation": confirmation,
        "tightened": tightened,
        "chosen": chosen_out,
        "one_below": evidence,
        "no_plan_reasons": (
            []
            if chosen is not None
            else (
                binding_summary(candidates)
                if not ranked
                else [
                    "no candidate passed its confirmation runs: "
                    + "; ".join(
                        f
                        for cf in confirmation
                        for s in cf["summary"].values()
                        for f in s["failures"][:2]
                    )
                ]
            )
        ),
        "timing": {k: round(v, 3) for k, v in timings.items()},
        "executor": {
            "executor": executor,
            "workers": runner.workers,
            "address": runner.address,
            "tasks": len(combos),
            "retired_workers": runner.retired,
        },
    }


def deterministic_part(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of a plan without what varies between runs of the same spec and seed (wall
    times, the executor): serial and Ray plans must agree on the rest, byte for byte."""
    out = copy.deepcopy(doc)
    out.pop("timing", None)
    out.pop("executor", None)
    out.pop("machine", None)
    runs = [r for cf in out["confirmation"] for r in cf["runs"]]
    if out["tightened"]:
        runs += out["tightened"]["runs"]
    for r in runs:
        r.pop("wall_s", None)
    return out


def _hit(analysis: Analysis, level: str) -> float:
    res = analysis.scenarios[0]
    return round(res.hit_ratio(level), 6)
