"""Warm start: caches begin at their steady state, filled lazily from the popularity model.

At full scale the caches of a global topology hold tens of millions of keys; a 30 s run
from empty caches would measure their warm-up, not the system. Filling them would not
fit in memory, so the steady state is applied **lazily**:

* For each region and cache level, :class:`CacheModel` solves the analytic steady state
  (:mod:`geoshard.storage.cache.steady`: Che's characteristic time with TTLs and write
  invalidations, the L1 -> L2 -> regional stack as a filtered stream) over the whole
  key population, and tabulates, per popularity class and time since the start, the
  probability that an untouched key is still resident.
* Each simulated cache is the real policy object started with
  :meth:`~geoshard.storage.cache.CachePolicy.start_warm`: a count of *virtual* residents
  fills its capacity. The first time a key is looked up, a deterministic per-(cache,
  key) uniform draw against that probability (:meth:`CacheModel.oracle`) says whether it
  was resident; if so it becomes a real entry (a hit) with a residual TTL, and one
  virtual resident is gone. Admissions evict virtual residents first (under LRU and
  FIFO they are the oldest entries); writes invalidate them too. When no virtual
  resident is left the cache is an ordinary one.

The decisions are keyed (a key is resident or not, consistently, never an independent
roll per lookup), and the check in ``tests/unit/test_sim_warm.py`` compares the hit
ratios of the first simulated seconds after a warm start with those after a long cold
run. Limits: the model's (IRM, filtered-stream hierarchy, SIEVE approximated as LRU;
see ``docs/simulator.md``).
"""

from __future__ import annotations

import bisect
import itertools
import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoshard.storage.cache.steady import characteristic_time, hit_probability, resident_after

from .population import Population, _power_integral

__all__ = ["CacheModel", "KeyInfo", "LevelModel", "PopularityClasses", "key_uniform"]

_EXACT_CLASSES = 4096
_BINS = 1500
_MASK = (1 << 64) - 1


def key_uniform(key: int, salt: int) -> float:
    """A uniform in [0, 1) that is a fixed function of ``(key, salt)``.

    Multiply-shift hashing with an odd 64-bit multiplier derived from ``salt``: cheap
    enough for every first lookup of a key, and independent across caches (salts).
    """
    return (((key + 0x632BE59BD9B4E019) * _multiplier(salt)) & _MASK) * _INV64


def _multiplier(salt: int) -> int:
    """An odd 64-bit multiplier from a salt (splitmix64 finaliser)."""
    z = (salt * 0x9E3779B97F4A7C15 + 0x7F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) | 1


_INV64 = 1.0 / (1 << 64)


@dataclass
class PopularityClasses:
    """A jurisdiction's ranks in popularity classes: exact ranks first, then log bins.

    Attributes:
        pop: the population.
        p: the popularity of one key of each class.
        count: keys per class.
        lo: the first rank of each class.
        exact: ranks below this are classes of their own.
    """

    pop: Population
    p: np.ndarray  # popularity of one key of the class
    count: np.ndarray  # keys in the class
    lo: list[int]  # first rank of each class, increasing
    exact: int
    _lo_arr: np.ndarray | None = None

    @classmethod
    def of(cls, pop: Population) -> PopularityClasses:
        """The classes of a population: exact ranks first, then log-spaced bins."""
        n, a = pop.n, pop.alpha
        k = min(n, _EXACT_CLASSES)
        ranks = np.arange(k, dtype=np.float64)
        p = list(pop.popularity(ranks))
        count = [1.0] * k
        lo = list(range(k))
        if n > k:
            edges = np.unique(np.floor(k * (n / k) ** (np.arange(_BINS + 1) / _BINS)))
            edges[-1] = n
            for x, y in itertools.pairwise(edges):
                c = y - x
                mass = _power_integral(x + 0.5, y + 0.5, a) / pop.z
                p.append(mass / c)
                count.append(c)
                lo.append(int(x))
        return cls(pop, np.array(p), np.array(count), lo, k)

    def index(self, rank: int) -> int:
        """The class of a rank."""
        if rank < self.exact:
            return rank
        return bisect.bisect_right(self.lo, rank) - 1

    def index_array(self, ranks: np.ndarray) -> np.ndarray:
        """The classes of many ranks (vectorised :meth:`index`)."""
        if self._lo_arr is None:
            self._lo_arr = np.array(self.lo, dtype=np.int64)
        return np.searchsorted(self._lo_arr, ranks, side="right") - 1


@dataclass
class LevelModel:
    """The steady state of one cache level in one region (all its instances alike).

    Attributes:
        level: ``l1``, ``l2`` or ``regional``.
        policy, ttl_s: the level's policy and TTL.
        t_c: the characteristic time (s), ``inf`` when TTL-bound.
        capacity_items: the full-scale capacity in keys.
        hit_ratio: the model's hit ratio of lookups reaching this level.
        head_residents: expected resident head keys of the slice (for the slice capacity).
        table: per jurisdiction, a ``[class x time]`` table of P(resident) of an untouched key.
        current: per jurisdiction, the table's column at the current time (see
            :meth:`CacheModel.advance`), as an array of floats for the oracles' lookups.
        hit0: per jurisdiction, per class, the steady-state hit probability of a lookup
            that reaches this level (the slice's head users are decided by it).
        calibrated: True when a keyed replay corrected the model (:meth:`CacheModel.calibrate`).
    """

    level: str
    policy: str
    ttl_s: float | None
    t_c: float
    capacity_items: float
    hit_ratio: float
    head_residents: float
    table: dict[str, np.ndarray]
    hit0: dict[str, list[float]]
    calibrated: bool = False
    current: dict[str, array[float]] = field(default_factory=dict)
    decay_factor: np.ndarray | None = None
    # the tables by time step (``[time x class]``, contiguous), made at the first advance
    # after a table changes: a step's column is then one copy, not thousands of floats
    _by_step: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def slice_capacity(self, scale: float) -> float:
        """The capacity of this level in a slice: ``R x`` what the tail users hold at full
        scale (the head users are decided by the model and take no room)."""
        head = min(self.head_residents, self.capacity_items)
        return max(1.0, scale * (self.capacity_items - head))


class CacheModel:
    """The analytic steady state of every cache level of one region.

    Args:
        populations: per jurisdiction whose requests use this region's caches.
        read_rate: per jurisdiction, lookups per second entering this region.
        write_rate: per jurisdiction, writes per second entering this region.
        inval_rate: per jurisdiction, writes per second anywhere (they invalidate the
            shared levels of every region allowed to hold the data).
        servers: L1 instances (API servers) in the region.
        levels: ``(name, policy, capacity_items, ttl_s)`` from L1 down.
        duration_s: the run's length (the time grid of the tables).
    """

    def __init__(
        self,
        populations: dict[str, Population],
        read_rate: dict[str, float],
        write_rate: dict[str, float],
        inval_rate: dict[str, float],
        servers: int,
        levels: Sequence[tuple[str, str, float, float | None]],
        duration_s: float,
        classes: dict[str, PopularityClasses] | None = None,
        key_info: KeyInfo | None = None,
    ) -> None:
        classes = classes or {}
        self.classes = {
            j: classes.get(j) or PopularityClasses.of(p) for j, p in populations.items()
        }
        self.key_info = key_info or KeyInfo()
        step = max(0.5, duration_s / 60.0)
        self.grid_step = step
        self.grid = [i * step for i in range(math.ceil(duration_s / step) + 2)]
        self.levels: dict[str, LevelModel] = {}
        self._decay: dict[str, dict[str, np.ndarray]] = {}
        self._lookup_rate: dict[str, dict[str, np.ndarray]] = {}
        # per jurisdiction: lookups of one key per second reaching the current level, and
        # the share of them that a write caused (a write invalidates every shared level at
        # once: such a lookup misses them all, which a filtered stream would not know)
        reach = {j: read_rate.get(j, 0.0) * c.p for j, c in self.classes.items()}
        by_write: dict[str, np.ndarray] | None = None
        for name, policy, cap, ttl in levels:
            share = 1.0 / servers if name == "l1" else 1.0
            r = {j: reach[j] * share for j in reach}
            w = {
                j: (write_rate.get(j, 0.0) * share if name == "l1" else inval_rate.get(j, 0.0))
                * self.classes[j].p
                for j in reach
            }
            js = list(self.classes)
            cat = (
                (lambda d, js=js: np.concatenate([d[j] for j in js]))
                if js
                else (lambda d: np.zeros(0))
            )
            weights = cat({j: self.classes[j].count for j in js})
            t_c = characteristic_time(policy, cat(r), cat(w), weights, ttl, cap) if js else math.inf
            table: dict[str, np.ndarray] = {}
            hit0: dict[str, list[float]] = {}
            decay: dict[str, np.ndarray] = {}
            lookups = hits = head = 0.0
            for j in js:
                cl = self.classes[j]
                plain = hit_probability(policy, r[j], w[j], ttl, t_c)
                h0 = plain if by_write is None else plain * (1.0 - by_write[j])
                hit0[j] = h0.tolist()
                lookups += float(np.dot(cl.count, r[j]))
                hits += float(np.dot(cl.count, r[j] * h0))
                hr = cl.pop.head
                below = np.clip(hr - np.array(cl.lo, dtype=np.float64), 0, cl.count)
                head += float(np.dot(below, h0))
                cols = np.stack(
                    [resident_after(policy, r[j], w[j], ttl, t_c, e) for e in self.grid], axis=1
                )
                with np.errstate(divide="ignore", invalid="ignore"):
                    decay[j] = np.where(plain[:, None] > 0, cols / plain[:, None], 0.0)
                table[j] = h0[:, None] * decay[j]
                reach[j] = reach[j] * (1.0 - h0)
            if name != "l1":  # the write-caused share of the lookups reaching the next level
                nxt = {}
                for j in js:
                    h0 = np.array(hit0[j])
                    with np.errstate(divide="ignore", invalid="ignore"):
                        if by_write is None:
                            rw = r[j] + w[j]
                            caused = np.where(rw > 0, w[j] / np.where(rw > 0, rw, 1.0), 0.0)
                        else:
                            caused = by_write[j]
                        nxt[j] = np.clip(np.where(h0 < 1, caused / (1.0 - h0), 1.0), 0.0, 1.0)
                by_write = nxt
            self.levels[name] = LevelModel(
                name, policy, ttl, t_c, cap, hits / lookups if lookups else 0.0, head, table, hit0
            )
            self._decay[name] = decay
            self._lookup_rate[name] = {j: r[j] for j in js}

    def calibrate(
        self,
        level: str,
        measured: dict[str, tuple[np.ndarray, np.ndarray]],
        first: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        min_lookups: int = 200,
    ) -> None:
        """Correct a level's steady-state hit probabilities with measured ones.

        ``measured[j] = (lookups, hits)`` per popularity class, from a keyed replay of the
        workload through the real caches (:meth:`geoshard.sim.engine.Simulation.calibrate`).
        Per log-spaced band of ranks with at least ``min_lookups`` lookups, the model's
        probabilities are scaled by measured / modelled hits; bands without enough
        lookups keep the model. ``first[j] = (lookups, hits)`` per class and time-grid
        step, of keys' first lookups after a reference time in the replay, rescales the
        decay of untouched residents step by step (a factor over all classes per run of
        consecutive steps that expect at least ``2 x min_lookups`` hits: about 5 %
        sampling error; a short tail keeps
        the last factor), so that what a warm start's first lookups find matches the replay.
        """
        lm = self.levels[level]
        lookups_all = hits_all = head = 0.0
        for j, (look, hit) in measured.items():
            if j not in lm.hit0:
                continue
            cl = self.classes[j]
            h0 = np.array(lm.hit0[j])
            bands = np.floor(np.log2(np.array(cl.lo, dtype=np.float64) + 1.0) * 2).astype(np.int64)
            factor = np.ones(len(h0))
            for b in np.unique(bands).tolist():
                m = bands == b
                n = float(look[m].sum())
                expected = float(np.dot(look[m], h0[m]))
                if n >= min_lookups and expected > 0:
                    factor[m] = float(hit[m].sum()) / expected
            h = np.clip(h0 * factor, 0.0, 1.0)
            lm.hit0[j] = h.tolist()
            lm.table[j] = h[:, None] * self._decay[level][j]
            rate = self._lookup_rate[level][j]
            lookups_all += float(np.dot(cl.count, rate))
            hits_all += float(np.dot(cl.count, rate * h))
            below = np.clip(cl.pop.head - np.array(cl.lo, dtype=np.float64), 0, cl.count)
            head += float(np.dot(below, h))
        if lookups_all:
            lm.hit_ratio = hits_all / lookups_all
            lm.head_residents = head
            lm.calibrated = True
        if first:
            self._calibrate_decay(lm, first, 2.0 * min_lookups)

    @staticmethod
    def _calibrate_decay(
        lm: LevelModel, first: dict[str, tuple[np.ndarray, np.ndarray]], min_expected: float
    ) -> None:
        steps = next(iter(lm.table.values())).shape[1] if lm.table else 0
        expected = np.zeros(steps)
        found = np.zeros(steps)
        for j, (look, hit) in first.items():
            tab = lm.table.get(j)
            if tab is None:
                continue
            expected += (look * tab).sum(axis=0)
            found += hit.sum(axis=0)
        # consecutive steps pooled until they expect enough hits; a short tail keeps the
        # last factor
        factor = np.ones(steps)
        last, start, e_sum, f_sum = 1.0, 0, 0.0, 0.0
        for k in range(steps):
            e_sum += expected[k]
            f_sum += found[k]
            if e_sum >= min_expected:
                last = f_sum / e_sum
                factor[start : k + 1] = last
                start, e_sum, f_sum = k + 1, 0.0, 0.0
        factor[start:] = last
        for j, tab in lm.table.items():
            lm.table[j] = np.clip(tab * factor[None, :], 0.0, 1.0)
        lm.decay_factor = factor

    def advance(self, now_s: float) -> None:
        """Point every level's oracles at the residency probabilities of time ``now_s``."""
        k = min(int(now_s / self.grid_step + 0.5), len(self.grid) - 1)
        for lm in self.levels.values():
            for j, tab in lm.table.items():
                made = lm._by_step.get(j)
                if made is None or made[0] is not tab:
                    made = lm._by_step[j] = (tab, np.ascontiguousarray(tab.T, dtype=np.float64))
                lm.current[j] = array("d", made[1][k].tobytes())

    def oracle(self, level: str, salt: int) -> _Oracle:
        """The residency oracle of one cache instance of ``level`` (its own ``salt``)."""
        return _Oracle(self, self.levels[level], salt)


class KeyInfo:
    """The popularity class of the key being looked up, shared by every cache's oracle (a
    request walks L1, L2 and the regional level, or invalidates several regions' levels,
    with one key). The engine sets it from the request, which carries its class; an
    oracle asked about another key computes it."""

    __slots__ = ("cls", "j", "key")

    def __init__(self) -> None:
        self.key = -1
        self.j: str | None = None
        self.cls = 0


class _Oracle:
    """``(key, now_s) -> insertion time if the key was resident, else None``.

    The probability is that of the model's current time step (:meth:`CacheModel.advance`).
    """

    __slots__ = ("_current", "_info", "_mult", "_offsets", "_ttl", "_two")

    def __init__(self, model: CacheModel, level: LevelModel, salt: int) -> None:
        # per jurisdiction: (first id, end id, name, n, b, a^-1, classes)
        self._offsets = sorted(
            (c.pop.offset, c.pop.offset + c.pop.n, j, c.pop.n, c.pop._b, c.pop._a_inv, c)
            for j, c in model.classes.items()
        )
        if not level.current:
            model.advance(0.0)
        self._current = level.current
        self._mult = _multiplier(salt)
        self._two = _multiplier(salt ^ 0x5DEECE66D)
        self._ttl = level.ttl_s
        self._info = model.key_info

    def __call__(self, key: Any, now_s: float) -> float | None:
        info = self._info
        if info.key == key:
            j, c = info.j, info.cls
        else:
            j = None
            c = 0
            for lo, hi, name, n, b, a_inv, cl in self._offsets:
                if lo <= key < hi:
                    j = name
                    rank = ((key - lo - b) * a_inv) % n if n > 1 else 0
                    c = rank if rank < cl.exact else bisect.bisect_right(cl.lo, rank) - 1
                    break
            info.key, info.j, info.cls = key, j, c
        cur = self._current.get(j)  # type: ignore[arg-type]
        if cur is None:  # a jurisdiction whose data this cache never holds
            return None
        if (((key + 0x632BE59BD9B4E019) * self._mult) & _MASK) * _INV64 >= cur[c]:
            return None
        ttl = self._ttl
        if ttl is None or now_s >= ttl:
            return now_s
        # alive at now with expiry uniform in (now, ttl]: inserted at expiry - ttl
        v = (((key + 0x632BE59BD9B4E019) * self._two) & _MASK) * _INV64
        return now_s + v * (ttl - now_s) - ttl
