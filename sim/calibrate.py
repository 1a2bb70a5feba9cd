"""Calibrating the warm start: a fast keyed replay of the workload through the real caches.

The analytic steady state (:class:`~geoshard.sim.warm.CacheModel`) treats the cache stack
as a filtered stream, which overstates a lower level that is not much larger than the
level above it (its copies age out while the level above serves the key: sim-anchors
§3.5), and models SIEVE as LRU. Before a warm-started run, :func:`calibrate` therefore
replays the workload at its starting rates, with no event loop, through real cache
policies and the shared cache walk (:mod:`geoshard.storage.cache.walk`): lookups in
order, fills above, writes invalidating every region that may hold the data. It samples
users systematically at a rate ``s`` (SHARDS: caches scaled by ``s`` see each sampled
key at its full rate), runs long enough for every level to turn over (three times its
TTL or characteristic time, within a request budget), and measures, per popularity band,
the hit ratio of lookups reaching each level, and, by the time since a reference point,
the hit ratio of a key's first lookup after it. Those correct the model
(:meth:`CacheModel.calibrate`): the first the steady-state hit probabilities, the second
how fast a warm start's untouched residents leave (a lower level's stream is the
misses of the level above, more regular than the Poisson stream the model's decay
assumes, so a key it held is met again sooner). The model then seeds the warm start and
decides the slice's head users. L1 is left to the model when the sample would make it too small to
simulate (it is TTL-bound and the model's renewal formula is exact there).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from geoshard.cluster.routing import REQUEST_DATA_CLASSES
from geoshard.spec import REQUEST_TYPES
from geoshard.storage.cache import walk as cache_walk

from .population import Population
from .workload import RegionArrivals, mix_vector, rate_segments

if TYPE_CHECKING:
    from .engine import Simulation

__all__ = ["calibrate"]

_MIN_L1 = 200.0  # below this many entries per L1, L1 is left to the model
_WINDOW_MS = 10_000.0


def calibrate(sim: Simulation, budget: int) -> dict[str, Any]:
    """Replay ``sim``'s workload through keyed caches and correct its cache models.

    Args:
        sim: a simulation whose regions have cache models (``sim.models``).
        budget: the most requests to replay.

    Returns:
        What was done: ``{"sample", "horizon_s", "requests", "levels"}``.
    """
    spec = sim.spec
    regions = [r for r in sim.part if r in sim.models]
    if not regions or budget <= 0:
        return {}
    rates = rate_segments(spec, max(sim.duration_ms, 1.0))[0][2]
    lam = sum(rates.get(r, 0.0) * 1000.0 for r in sim.part if sim.jur[r] in sim.pops)
    if lam <= 0:
        return {}
    turnover = 0.0
    for r in regions:
        for name, lm in sim.models[r].levels.items():
            if name == "l1":
                continue
            t = min(lm.ttl_s or math.inf, lm.t_c)
            turnover = max(turnover, t if math.isfinite(t) else 600.0)
    horizon_s = min(max(3.0 * (turnover or 200.0), 60.0), 4 * 3600.0)
    sample = min(1.0, budget / (lam * horizon_s))
    # a plain systematic sample of every rank (no head): the replay measures hit ratios
    # per popularity band, the hottest users included
    pops = {
        j: Population(j, p.n, p.alpha, offset=p.offset, scale=sample, phase=0.5, head_factor=0.0)
        for j, p in sim.pops.items()
    }
    levels = [n for n, _ in sim.levels]
    keyed_l1 = "l1" in levels and all(
        sample * sim.models[r].levels["l1"].capacity_items >= _MIN_L1 for r in regions
    )
    # the replay's caches: L1 per API server (when keyed), one L2 and regional per region
    caches: dict[str, dict[str, list[Any]]] = {}
    for r in regions:
        row: dict[str, list[Any]] = {}
        for name, lvl in sim.levels:
            if name == "l1" and not keyed_l1:
                continue
            cap = max(1.0, sample * sim.models[r].levels[name].capacity_items)
            n = spec.regions[r].api.servers if name == "l1" else 1
            row[name] = [sim._policy(lvl, cap) for _ in range(n)]
        caches[r] = row
    known = sim.timeline.known[0]
    mix = mix_vector(spec)
    entry: dict[tuple[int, int], str | None] = {}
    for ri, c in enumerate(sim.regions):
        j = sim.jur[c]
        if c not in sim.part or j not in pops:
            continue
        for ti in range(3):
            cands = sim.router.entry_candidates(
                c, j, REQUEST_DATA_CLASSES[REQUEST_TYPES[ti]], known
            )
            entry[(ri, ti)] = cands[0] if cands else None
    inval = {
        j: [
            x[0]
            for r in sorted(sim.policy.allowed_regions(j, "user_features", "store"))
            if r in caches
            for n, x in caches[r].items()
            if n != "l1"
        ]
        for j in pops
    }
    store_ok = {
        (j, r): sim.policy.is_allowed(j, "user_features", r, "store") for j in pops for r in regions
    }
    counts: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
    first: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
    for r in regions:
        bins = len(sim.models[r].grid)
        for j, cl in sim.models[r].classes.items():
            for name in levels:
                counts[(r, name, j)] = (np.zeros(len(cl.p)), np.zeros(len(cl.p)))
                first[(r, name, j)] = (np.zeros((len(cl.p), bins)), np.zeros((len(cl.p), bins)))
    sources = []
    for ri, r in enumerate(sim.regions):
        j = sim.jur[r]
        if r in sim.part and j in pops:
            seg = [(0.0, horizon_s * 1000.0, rates)]
            sources.append(
                (ri, RegionArrivals(r, pops[j], seg, mix, np.random.default_rng((sim.seed, 7, ri))))
            )
    rng = np.random.default_rng((sim.seed, 11))
    measure_from = horizon_s * 1000.0 * (2.0 / 3.0)
    # per cache instance: key -> the reference window it was last touched in (first
    # touches are counted from the start of each window of the run's length)
    seen: dict[int, dict[int, int]] = {}
    span_ms = max(sim.duration_ms, 1000.0)
    done = 0
    t_end = 0.0
    pending: dict[int, Any] = {}
    while t_end < horizon_s * 1000.0:
        t_end += _WINDOW_MS
        parts = []
        for ri, src in sources:
            chunk = pending.pop(ri, None)
            while True:
                if chunk is None:
                    if src.done:
                        break
                    chunk = src.next_chunk(8192)
                if not len(chunk.t_ms):
                    chunk = None
                    continue
                inside = chunk.t_ms < t_end
                if inside.all():
                    parts.append((ri, chunk, inside))
                    chunk = None
                    continue
                parts.append((ri, chunk, inside))
                pending[ri] = _rest(chunk, ~inside)
                break
        if not parts:
            continue
        times = np.concatenate([c.t_ms[m] for _, c, m in parts])
        ris = np.concatenate([np.full(int(m.sum()), ri) for ri, _, m in parts])
        typ = np.concatenate([c.rtype[m] for _, c, m in parts])
        usr = np.concatenate([c.user[m] for _, c, m in parts])
        rnk = np.concatenate([c.rank[m] for _, c, m in parts])
        hd = np.concatenate([c.head[m] for _, c, m in parts])
        drw = np.concatenate([c.draw[m] for _, c, m in parts])
        order = np.argsort(times, kind="stable")
        done += _replay(
            sim,
            times[order],
            ris[order],
            typ[order],
            usr[order],
            rnk[order],
            hd[order],
            drw[order],
            entry,
            caches,
            inval,
            store_ok,
            counts,
            first,
            seen,
            keyed_l1,
            levels,
            measure_from,
            span_ms,
            rng,
        )
    for r in regions:
        model = sim.models[r]
        for name in levels:
            if name == "l1" and not keyed_l1:
                continue
            model.calibrate(
                name,
                {j: counts[(r, name, j)] for j in model.classes},
                {j: first[(r, name, j)] for j in model.classes},
            )
    return {
        "sample": sample,
        "horizon_s": horizon_s,
        "requests": done,
        "levels": [n for n in levels if n != "l1" or keyed_l1],
    }


def _rest(chunk: Any, keep: np.ndarray) -> Any:
    from .workload import Chunk

    return Chunk(
        chunk.start_ms,
        chunk.end_ms,
        chunk.t_ms[keep],
        chunk.rtype[keep],
        chunk.user[keep],
        chunk.rank[keep],
        chunk.head[keep],
        chunk.draw[keep],
    )


def _replay(
    sim: Simulation,
    t: np.ndarray,
    ris: np.ndarray,
    typ: np.ndarray,
    usr: np.ndarray,
    rnk: np.ndarray,
    hd: np.ndarray,
    drw: np.ndarray,
    entry: dict[tuple[int, int], str | None],
    caches: dict[str, dict[str, list[Any]]],
    inval: dict[str, list[Any]],
    store_ok: dict[tuple[str, str], bool],
    counts: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]],
    first: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]],
    seen: dict[int, dict[int, int]],
    keyed_l1: bool,
    levels: list[str],
    measure_from: float,
    span_ms: float,
    rng: np.random.Generator,
) -> int:
    """Walk one window of replayed requests through the caches; returns how many.

    From ``measure_from`` on it counts, per level and popularity class, the lookups and
    hits of every lookup (``counts``) and of a key's first touch of a cache instance in
    each window of ``span_ms`` (the run's length) since then, by the time since the
    window began (``first``, on the model's time grid): what a warm-started cache meets
    when a key it holds virtually is first asked for.
    """
    vb = sim.value_bytes
    jur = sim.jur
    regions = sim.regions
    models = sim.models
    model_l1 = "l1" in levels and not keyed_l1
    shared = [n for n in levels if n != "l1"]
    u = rng.random(len(t)).tolist()
    n = 0
    for k, (tm, ri, ti, uid, rank, head, draw) in enumerate(
        zip(
            t.tolist(),
            ris.tolist(),
            typ.tolist(),
            usr.tolist(),
            rnk.tolist(),
            hd.tolist(),
            drw.tolist(),
            strict=False,
        )
    ):
        if head:
            continue
        j = jur[regions[ri]]
        e = entry.get((ri, ti))
        if e is None or e not in caches:
            continue
        n += 1
        cs = caches[e]
        if ti == 2:
            cache_walk.invalidate(inval[j], uid)
            if keyed_l1:
                l1s = cs["l1"]
                l1s[draw % len(l1s)].invalidate(uid)
            if tm >= measure_from:  # a written key's next lookup is not a first touch
                win = int((tm - measure_from) // span_ms)
                for inst in [*inval[j], *([l1s[draw % len(l1s)]] if keyed_l1 else [])]:
                    seen.setdefault(id(inst), {})[uid] = win
            continue
        cl = models[e].classes.get(j)
        if cl is None:
            continue
        c = cl.index(rank)
        if model_l1:
            h1 = models[e].levels["l1"].hit0.get(j)
            if h1 is not None and u[k] < h1[c]:
                continue  # an L1 hit by the model: the request goes no further
        now_s = tm * 0.001
        stack = [cs["l1"][draw % len(cs["l1"])]] if keyed_l1 else []
        stack += [cs[name][0] for name in shared]
        hit = cache_walk.lookup(stack, uid, now_s)
        if tm >= measure_from:
            names = (["l1"] if keyed_l1 else []) + shared
            grid = models[e]
            windows, rel = divmod(tm - measure_from, span_ms)
            win = int(windows)
            tb = min(int(rel * 0.001 / grid.grid_step + 0.5), len(grid.grid) - 1)
            for i in range(len(stack) if hit < 0 else hit + 1):
                look, hits = counts[(e, names[i], j)]
                look[c] += 1
                if i == hit:
                    hits[c] += 1
                keys = seen.setdefault(id(stack[i]), {})
                if keys.get(uid) != win:
                    keys[uid] = win
                    flook, fhits = first[(e, names[i], j)]
                    flook[c, tb] += 1
                    if i == hit:
                        fhits[c, tb] += 1
        if hit != 0:
            ok = store_ok.get((j, e), False)
            cache_walk.fill(stack, uid, vb, now_s, hit, (ok,) * len(stack))
    return n
