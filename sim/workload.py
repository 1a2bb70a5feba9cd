"""Workload: Zipf-popular real keys, Poisson arrivals with diurnal and campaign rates, scaling.

* :func:`scale_spec` shrinks a spec to a fraction of its shards, traffic and keys and
  says what it changed.
* :class:`ZipfKeys` draws bounded-Zipf ranks in NumPy batches (exact CDF for the head,
  a continuous inverse CDF for the tail of very large populations) and scrambles rank ->
  id with a fixed affine permutation, so hot users spread over the ring.
* :class:`ArrivalStream` yields arrivals in batches: Poisson with a piecewise-constant
  rate (``peak_qps x diurnal step x campaign multipliers``, exact: the exponential gap
  is redrawn at every rate change, which is valid because it is memoryless).

Times here are in milliseconds, the simulator's clock unit.

Examples:
    >>> import numpy as np
    >>> z = ZipfKeys(1000, 0.8, np.random.default_rng(1))
    >>> ids = z.draw(5)
    >>> bool(((ids >= 0) & (ids < 1000)).all())
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoshard.errors import ConfigError, SpecError
from geoshard.spec import REQUEST_TYPES, Spec

__all__ = [
    "ArrivalStream",
    "Arrivals",
    "ZipfKeys",
    "full_scale_load_factors",
    "rate_segments",
    "scale_spec",
]

_HEAD = 1 << 20  # ranks with an exact CDF; beyond, a continuous approximation


def _scaled_count(n: int, f: float) -> int:
    return max(1, round(n * f))


def scale_spec(spec: Spec, scale: float) -> tuple[Spec, list[str]]:
    """A copy of ``spec`` holding a fraction ``scale`` of its shards, traffic and keys.

    Scaled: hot primaries, API servers and warm nodes per region (``max(1, round(n x F))``),
    peak QPS (``x F``), users and items (``x F``), cache capacities (``x F``, at least 1),
    so that keys per node and cache size per key space stay as in the full spec.
    Not scaled: service times, workers per server/node, replicas per primary, RTTs,
    TTLs, the mix, Zipf exponents, SLOs and faults.

    Returns:
        The effective spec and the assumptions (one sentence each) to print and store.

    Raises:
        ConfigError: ``scale`` outside (0, 1], or the scaled spec does not validate.
    """
    if not (0 < scale <= 1) or not math.isfinite(scale):
        raise ConfigError(f"--scale (={scale}) must be in (0, 1]; e.g. 0.001 for a laptop run "
                          "of a planet-sized spec")
    notes = [f"scale {scale:g}: requests are simulated for a fraction {scale:g} of the shards, "
             "traffic and keys"]
    if scale == 1:
        notes = ["scale 1: the full topology is simulated"]
        return spec, notes + _common_notes()
    data: dict[str, Any] = spec.model_dump(mode="json")
    changed = []
    for name, reg in data["regions"].items():
        for tier, key in (("api", "servers"), ("hot", "nodes"), ("warm", "nodes")):
            old = reg[tier][key]
            new = _scaled_count(old, scale)
            reg[tier][key] = new
            if abs(new - old * scale) > 1e-9:
                changed.append(f"{name}.{tier}.{key} {old}->{new} (exact {old * scale:g})")
    w = data["workload"]
    w["users"] = _scaled_count(w["users"], scale)
    w["items"] = _scaled_count(w["items"], scale)
    w["peak_qps"] = {r: q * scale for r, q in w["peak_qps"].items()}
    for lvl in ("l1", "l2", "regional"):
        c = data["caches"].get(lvl)
        if c:
            for k in ("capacity_items", "capacity_bytes"):
                if c.get(k):
                    c[k] = _scaled_count(c[k], scale)
    # node weights name nodes that may no longer exist
    names = {f"{r}/hot-{i}" for r, reg in data["regions"].items() for i in range(reg["hot"]["nodes"])}
    data["shards"]["users"]["weights"] = {
        n: v for n, v in data["shards"]["users"]["weights"].items() if n in names}
    if data["shards"]["users"].get("replication", 1) > 1:
        data["shards"]["users"]["allow_colocated_replicas"] = (
            data["shards"]["users"].get("allow_colocated_replicas", False))
    try:
        eff = Spec.model_validate(data)
    except Exception as exc:  # pydantic ValidationError with our cross-field lines
        raise SpecError(f"the spec scaled by {scale:g} does not validate ({exc}); use a larger "
                        "--scale") from None
    notes.append("scaled: hot primaries, API servers and warm nodes per region "
                 "(max(1, round(n x F))), peak QPS x F, users x F, items x F, cache capacities x F")
    if changed:
        notes.append("rounding changed capacity per unit of traffic for: " + "; ".join(changed[:12])
                     + ("; ..." if len(changed) > 12 else "")
                     + " (per-node load in the scaled model differs from full scale accordingly)")
    return eff, notes + _common_notes()


#: the count that :func:`scale_spec` rounds, per node kind of the simulator's pools.
_SCALED_COUNTS = {"api": ("api", "servers"), "hot": ("hot", "nodes"), "warm": ("warm", "nodes")}


def full_scale_load_factors(spec: Spec, eff: Spec, scale: float) -> dict[tuple[str, str], float]:
    """Per (region, node kind), the factor from a scaled pool's load to full scale.

    The scaled model gives a region ``F x`` its traffic but ``k = max(1, round(n x F))`` of
    its ``n`` servers or nodes, so the load per server differs from full scale by
    ``k / (n x F)``. Load is linear in traffic, so a scaled pool's offered load times this
    factor estimates the full-scale pool's mean (queueing delays do not scale this way).

    Args:
        spec: the full spec.
        eff: the spec as :func:`scale_spec` returned it for ``scale``.
        scale: the scale, in (0, 1].

    Returns:
        ``{(region, kind): factor}`` for kinds ``api``, ``hot`` and ``warm``; all 1.0 at
        scale 1.

    Examples:
        >>> from geoshard.spec import load_spec
        >>> spec = load_spec("examples/global.yaml")  # doctest: +SKIP
        >>> eff, _ = scale_spec(spec, 0.001)  # doctest: +SKIP
        >>> full_scale_load_factors(spec, eff, 0.001)[("eu-west", "api")]  # 32 -> 1  # doctest: +SKIP
        31.25
    """
    out: dict[tuple[str, str], float] = {}
    for r, reg in eff.regions.items():
        full = spec.regions[r]
        for kind, (tier, key) in _SCALED_COUNTS.items():
            k = getattr(getattr(reg, tier), key)
            n = getattr(getattr(full, tier), key)
            out[(r, kind)] = 1.0 if scale == 1 else k / (n * scale)
    return out


def _common_notes() -> list[str]:
    return [
        "not scaled: service times, workers per server/node, replicas per primary, RTTs, TTLs, "
        "request mix, Zipf exponents, SLOs, fault schedule",
        "clients of a region are users of that region's jurisdiction; the per-region arrival "
        "rate is peak_qps x diurnal step x campaign multipliers (so request shares per "
        "jurisdiction follow peak_qps; user shares follow users_by_jurisdiction)",
        "API workers are CPU slots held only for the API service time (asynchronous I/O); "
        "caches and networks are pure delays, hot/warm nodes and API pools are FIFO queues",
        "latencies are grouped by the client's region; failed, shed requests carry no latency "
        "but count against SLO attainment",
    ]


class ZipfKeys:
    """Bounded Zipf(``alpha``) over ``n`` keys, drawn in batches, scrambled to ids.

    Rank ``k`` (1-based) has probability ``k^-alpha / H``. The first 2^20 ranks use the
    exact CDF (``searchsorted``); the tail of larger populations uses the inverse of the
    continuous density, whose error per rank is below the sampling noise of any run.
    Ranks map to ids in ``[0, n)`` by ``id = (rank * a + b) mod n`` with ``gcd(a, n) = 1``.

    Args:
        n: population size (>= 1).
        alpha: Zipf exponent (>= 0; 0 = uniform).
        rng: the generator this sampler owns.
    """

    def __init__(self, n: int, alpha: float, rng: np.random.Generator) -> None:
        if n < 1:
            raise ConfigError(f"a key population must hold at least 1 key (got {n})")
        self.n, self.alpha, self._rng = n, alpha, rng
        head = min(n, _HEAD)
        w = np.arange(1, head + 1, dtype=np.float64) ** (-alpha)
        tail_mass = self._tail_integral(head + 0.5, n + 0.5) if n > head else 0.0
        total = float(w.sum()) + tail_mass
        self._cdf = np.cumsum(w) / total
        self._head_mass = float(self._cdf[-1])
        self._head = head
        a = 2_654_435_761 % n or 1
        while math.gcd(a, n) != 1:
            a += 1
        self._a, self._b = a, (n // 3)

    def _tail_integral(self, lo: float, hi: float) -> float:
        a = self.alpha
        if abs(a - 1.0) < 1e-12:
            return math.log(hi / lo)
        return (hi ** (1 - a) - lo ** (1 - a)) / (1 - a)

    def ranks(self, size: int) -> np.ndarray:
        """``size`` ranks in ``[0, n)`` (0 = most popular)."""
        u = self._rng.random(size)
        r = np.searchsorted(self._cdf, u, side="right")
        if self.n > self._head:
            tail = u >= self._head_mass
            if tail.any():
                # invert the continuous tail: mass from head+0.5 to x equals (u - head_mass) * total
                a = self.alpha
                lo, hi = self._head + 0.5, self.n + 0.5
                frac = (u[tail] - self._head_mass) / (1.0 - self._head_mass)
                if abs(a - 1.0) < 1e-12:
                    x = lo * (hi / lo) ** frac
                else:
                    x = (lo ** (1 - a) + frac * (hi ** (1 - a) - lo ** (1 - a))) ** (1 / (1 - a))
                r[tail] = np.minimum(np.floor(x - 0.5).astype(np.int64), self.n - 1)
        return np.minimum(r, self.n - 1)

    def draw(self, size: int) -> np.ndarray:
        """``size`` ids in ``[0, n)``: Zipf ranks through the fixed permutation."""
        r = self.ranks(size).astype(np.int64)
        return (r * self._a + self._b) % self.n


def rate_segments(spec: Spec, duration_ms: float) -> list[tuple[float, float, dict[str, float]]]:
    """Piecewise-constant per-region rates: ``[(start_ms, end_ms, {region: req/ms})]``."""
    w = spec.workload
    cuts = {0.0, duration_ms}
    step = w.day_s * 1000.0 / len(w.diurnal)
    k = 1
    while k * step < duration_ms:
        cuts.add(k * step)
        k += 1
    for c in w.campaigns:
        for t in (c.start_s * 1000.0, (c.start_s + c.duration_s) * 1000.0):
            if 0 < t < duration_ms:
                cuts.add(t)
    edges = sorted(cuts)
    segs = []
    for a, b in zip(edges, edges[1:]):
        mid = (a + b) / 2
        diurnal = w.diurnal[int((mid % (w.day_s * 1000.0)) // step) % len(w.diurnal)]
        rates = {}
        for r in spec.regions:
            q = w.peak_qps.get(r, 0.0) * diurnal
            for c in w.campaigns:
                if c.start_s * 1000.0 <= mid < (c.start_s + c.duration_s) * 1000.0 and (
                        c.regions is None or r in c.regions):
                    q *= c.multiplier
            rates[r] = q / 1000.0
        segs.append((a, b, rates))
    return segs


@dataclass
class Arrivals:
    """One batch of arrivals, as Python lists (fast to iterate).

    Attributes:
        t_ms: arrival times, increasing.
        region: client region index.
        rtype: request type index (into ``REQUEST_TYPES``).
        user: user id (global, jurisdiction ranges are disjoint).
        item: item id.
        draw: a uniform integer for per-request choices (API server, ...).
    """

    t_ms: list[float]
    region: list[int]
    rtype: list[int]
    user: list[int]
    item: list[int]
    draw: list[int]


class ArrivalStream:
    """All client arrivals of a run, in time order, generated in NumPy batches.

    Each region's clients are users of the region's jurisdiction; the jurisdiction's
    ``users x share`` users form a disjoint id range ``[offset, offset + n)``.

    Args:
        spec: the effective spec.
        duration_ms: arrivals stop here.
        rng: the generator for gaps, regions and types.
        key_rngs: generators for user and item draws.
        batch: arrivals per batch.
    """

    def __init__(self, spec: Spec, duration_ms: float, rng: np.random.Generator,
                 key_rngs: list[np.random.Generator], batch: int = 8192) -> None:
        self.regions = list(spec.regions)
        self.segments = rate_segments(spec, duration_ms)
        self._rng = rng
        self._batch = batch
        w = spec.workload
        self.jur_of_region = [spec.regions[r].jurisdiction for r in self.regions]
        jurs = sorted(set(self.jur_of_region))
        self.user_offset: dict[str, int] = {}
        self.user_count: dict[str, int] = {}
        off = 0
        for j in sorted(spec.jurisdictions):
            n = round(w.users * w.users_by_jurisdiction.get(j, 0.0))
            self.user_offset[j], self.user_count[j] = off, n
            off += n
        self.silent_regions = [r for r, j in zip(self.regions, self.jur_of_region)
                               if self.user_count[j] == 0]
        self._users = {j: ZipfKeys(self.user_count[j], w.zipf.users, key_rngs[0])
                       for j in jurs if self.user_count[j] > 0}
        self._items = ZipfKeys(w.items, w.zipf.items, key_rngs[1])
        self._mix = np.array([w.mix.get(t, 0.0) for t in REQUEST_TYPES], dtype=np.float64)
        self._mix = self._mix / self._mix.sum()

    def batches(self) -> Iterator[Arrivals]:
        """Yield every arrival of the run, batch by batch."""
        rng, n = self._rng, self._batch
        region_jur = [self.jur_of_region[i] for i in range(len(self.regions))]
        for a, b, rates in self.segments:
            lam = np.array([0.0 if r in self.silent_regions else rates[r] for r in self.regions])
            total = float(lam.sum())
            if total <= 0:
                continue
            p = lam / total
            t = a
            while t < b:
                gaps = rng.exponential(1.0 / total, n)
                times = t + np.cumsum(gaps)
                keep = times < b
                times = times[keep]
                t = float(times[-1]) if len(times) == n else b
                m = len(times)
                if m == 0:
                    break
                reg = rng.choice(len(p), size=m, p=p)
                typ = rng.choice(len(self._mix), size=m, p=self._mix)
                users = np.empty(m, dtype=np.int64)
                for ri in np.unique(reg).tolist():
                    j = region_jur[ri]
                    mask = reg == ri
                    users[mask] = self._users[j].draw(int(mask.sum())) + self.user_offset[j]
                items = self._items.draw(m)
                draw = rng.integers(0, 1 << 30, m)
                yield Arrivals(times.tolist(), reg.tolist(), typ.tolist(), users.tolist(),
                               items.tolist(), draw.tolist())
