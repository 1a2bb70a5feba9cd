"""The analytic model against the simulator, on the same spec at full scale.

:func:`compare` simulates a spec at scale 1 from empty caches (a warm-up long enough for
every cache level to turn over, so the hit ratios measured are the keyed caches' own,
never the model's warm start) and evaluates the analytic model of
:mod:`geoshard.sim.analytic` on it, then lines up:

* per pool: the P99 of the queueing delay (the hot tier of a region as one pool: the
  mixture of its nodes, weighted by their requests) and the offered load;
* per request type and client region: P99 latency;
* per cache level: the hit ratio of lookups reaching it.

A P99 wait is compared only where the simulator saw at least 5 % of requests wait: the
P99 of a delay that is zero for 95 % or more of requests sits on the edge of that atom,
``ln(P(wait) / 1 %)`` conditional means, where a point of P(wait) moves it by half. ``docs/planning.md`` holds the table for the
specs of ``examples/validation/plan``; ``tests/unit/test_plan_analytic.py`` runs a small
case in CI.

Examples:
    >>> from geoshard.spec import load_spec
    >>> rows = compare(load_spec("examples/validation/plan/mmc.yaml"), duration_s=40, warmup_s=5)  # doctest: +SKIP
    >>> [r for r in rows if r.what == "pool"][0].name                                              # doctest: +SKIP
    'r1/api'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geoshard.spec import Spec

from .analytic import AnalyticModel, PoolResult, Sizing
from .engine import EngineOptions
from .metrics import LogHistogram
from .parallel import simulate_parts
from .scenarios import Scenario

__all__ = ["Comparison", "compare"]

#: a P99 wait is compared only where at least this share of requests waited.
MIN_WAITING = 0.05


@dataclass(frozen=True)
class Comparison:
    """One line of the comparison.

    Attributes:
        spec: the spec's name.
        what: ``pool`` (P99 wait), ``load`` (offered load), ``latency`` (P99), ``cache``
            (hit ratio).
        name: the pool, ``type/region`` or cache level.
        model: the analytic value.
        sim: the simulated value.
        error: relative error (hit ratios: absolute, in points of 1.0).
        tolerance: the bound it should meet (NaN: shown, not judged).
    """

    spec: str
    what: str
    name: str
    model: float
    sim: float
    error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        """True when the error is within the tolerance (or not judged)."""
        return math.isnan(self.tolerance) or abs(self.error) <= self.tolerance


def _rel(model: float, sim: float) -> float:
    if sim == 0:
        return 0.0 if model == 0 else math.inf
    return model / sim - 1.0


def _pooled_p99(hists: list[tuple[LogHistogram, int]]) -> tuple[float, float]:
    """P99 of pooled waits (zeros included) and the share that waited."""
    total = LogHistogram()
    zeros = 0
    for h, z in hists:
        total.merge(h)
        zeros += z
    n = total.count + zeros
    if not n:
        return 0.0, 0.0
    waited = total.count / n
    rank = 0.99 * n
    if rank <= zeros:
        return 0.0, waited
    return float(total.quantile((rank - zeros) / total.count)), waited


def compare(
    spec: Spec,
    *,
    duration_s: float = 90.0,
    warmup_s: float = 30.0,
    seed: int = 1,
    p99_tolerance: float = 0.10,
    hit_tolerance: float = 0.01,
) -> list[Comparison]:
    """Simulate ``spec`` (scale 1, cold caches, ``warmup_s`` discarded) and line it up with
    the analytic model (normal scenario).

    Returns:
        The comparison lines (see :class:`Comparison`).
    """
    res, _ = simulate_parts(
        spec, seed, duration_s, warmup_s, 1.0, EngineOptions(warm_start=False), workers=1
    )
    model = AnalyticModel(spec, seed)
    normal = Scenario("normal", "normal")
    an = model.evaluate(Sizing.of(spec), [normal]).scenarios[0]
    window_ms = (duration_s - warmup_s) * 1000.0
    out: list[Comparison] = []
    name = spec.name
    for region in spec.regions:
        groups = {
            "api": [f"{region}/api"],
            "warm": [f"{region}/warm"],
            "hot": [n for n in res.pools if n.startswith(f"{region}/hot-")],
        }
        for kind, members in groups.items():
            stats = [res.pools[m] for m in members if m in res.pools]
            if not stats or not sum(s.requests for s in stats):
                continue
            sim_p99, waited = _pooled_p99([(s.waits, s.zero_waits) for s in stats])
            pools = [an.pools[m] for m in members if m in an.pools]
            lam = np.array([p.arrivals_per_s for p in pools])
            model_p99 = _mixture_p99(pools) if kind == "hot" else pools[0].wait_p99_ms
            label = f"{region}/{kind}"
            judged = waited >= MIN_WAITING
            out.append(
                Comparison(
                    name,
                    "pool",
                    label,
                    model_p99,
                    sim_p99,
                    _rel(model_p99, sim_p99) if judged else 0.0,
                    p99_tolerance if judged else math.nan,
                )
            )
            sim_load = sum(s.demand_ms for s in stats) / (
                sum(s.capacity for s in stats) * window_ms
            )
            model_load = (
                float(np.dot(lam, [p.load for p in pools]) / lam.sum()) if lam.sum() else 0.0
            )
            if kind == "hot":
                model_load = float(np.mean([p.load for p in pools]))
            out.append(
                Comparison(
                    name, "load", label, model_load, sim_load, _rel(model_load, sim_load), math.nan
                )
            )
    for row in an.rows:
        h = res.hist.get((row.type, row.client))
        if h is None or not h.count:
            continue
        sim = float(h.quantile(0.99))
        out.append(
            Comparison(
                name,
                "latency",
                f"{row.type}/{row.client}",
                row.p99_ms,
                sim,
                _rel(row.p99_ms, sim),
                p99_tolerance,
            )
        )
    for level in res.cache_hits:
        hits, misses = res.cache_hits[level], res.cache_misses.get(level, 0)
        if hits + misses == 0:
            continue
        sim = hits / (hits + misses)
        mod = an.hit_ratio(level)
        policy = getattr(spec.caches, level).policy
        tol = hit_tolerance if policy != "sieve" else math.nan
        out.append(Comparison(name, "cache", f"{level} ({policy})", mod, sim, mod - sim, tol))
    return out


def _mixture_p99(pools: list[PoolResult]) -> float:
    """P99 of the wait at a request's hot node: the mixture of the nodes' waits, by their
    arrivals (what the simulator's pooled waits measure)."""
    lam = np.array([p.arrivals_per_s for p in pools])
    if lam.sum() <= 0:
        return 0.0
    w = lam / lam.sum()

    def survival(t: float) -> float:
        s = 0.0
        for wi, p in zip(w, pools, strict=True):
            if p.p_wait <= 0:
                continue
            cond = p.wait_mean_ms / p.p_wait
            s += wi * p.p_wait * math.exp(-t / cond) if cond > 0 else 0.0
        return s

    if survival(0.0) <= 0.01:
        return 0.0
    lo, hi = 0.0, 1.0
    while survival(hi) > 0.01:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if survival(mid) > 0.01 else (lo, mid)
    return hi
