"""Steady-state residency of a key in a cache: Che's characteristic time with TTLs and writes.

Under the independent reference model a key is looked up at rate ``r`` and invalidated
(written) at rate ``w`` (both per second). A cache of ``C`` items with policy LRU, FIFO
or SIEVE and an optional TTL set at insertion (Redis ``SET ... EX``, no refresh on a hit)
is described by one *characteristic time* ``T_C`` (Che et al. 2002; Martina et al. 2014
for FIFO; sim-anchors §3.3-3.4):

* LRU (and SIEVE, approximated as LRU): a lookup hits when the previous lookup came
  within ``T_C`` with no write in between: ``r / (r + w) x (1 - exp(-(r + w) T_C))``;
  with a TTL, also at most the insertion-timer renewal value below with timer ``T``.
* FIFO: an entry lives an insertion timer ``tau = min(T_C, T)`` unless a write kills it
  first: mean life ``L = (1 - exp(-w tau)) / w`` and hit probability ``r L / (1 + r L)``.
* ``T_C`` solves ``sum over keys of P(resident) = C``; by PASTA ``P(resident)`` equals
  the hit probability. When even ``T_C = inf`` fills less than ``C`` the cache is
  TTL-bound and ``T_C = inf``.

These are the oracles of the simulator's warm start (:mod:`geoshard.sim.warm`) and of
the analytic planner. Their limits: IRM (no temporal locality beyond popularity), a
hierarchy treated as a filtered stream (accurate when a lower level is much larger than
the one above, sim-anchors §3.5), SIEVE approximated by LRU.

Examples:
    >>> import numpy as np
    >>> r = np.array([10.0, 1.0, 0.1])
    >>> w = np.zeros(3)
    >>> [round(float(x), 3) for x in hit_probability("lru", r, w, None, 1.0)]
    [1.0, 0.632, 0.095]
    >>> round(characteristic_time("lru", r, w, np.ones(3), None, 2), 3)
    1.802
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from geoshard.errors import ConfigError

__all__ = ["characteristic_time", "hit_probability", "resident_after"]

FloatArray = npt.NDArray[np.float64]
_POLICIES = ("lru", "fifo", "sieve")


def _check(policy: str) -> str:
    p = policy.lower()
    if p not in _POLICIES:
        raise ConfigError(
            f"policy '{policy}' has no steady-state model; use one of {', '.join(_POLICIES)}"
        )
    return p


def _one_minus_exp(x: FloatArray) -> FloatArray:
    """``1 - exp(-x)`` for x >= 0 (inf -> 1), accurate near 0."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = -np.expm1(-x)
    return np.where(np.isinf(x), 1.0, out)


def _life(w: FloatArray, timer: float | FloatArray) -> FloatArray:
    """Mean life of an entry with an insertion timer, killed by writes at rate ``w``."""
    t = np.broadcast_to(np.asarray(timer, dtype=np.float64), w.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        killed = _one_minus_exp(w * t) / w
    out = np.where(w > 0, killed, t)
    return np.where(np.isinf(t) & (w > 0), 1.0 / np.where(w > 0, w, 1.0), out)


def _renewal(r: FloatArray, life: FloatArray) -> FloatArray:
    with np.errstate(invalid="ignore", over="ignore"):
        rl = r * life
        out = rl / (1.0 + rl)
    return np.where(np.isinf(rl), 1.0, out)


def hit_probability(
    policy: str,
    read_rate: npt.ArrayLike,
    inval_rate: npt.ArrayLike,
    ttl_s: float | None,
    t_c: float,
) -> FloatArray:
    """Per key, the probability that a lookup hits (= that the key is resident).

    Args:
        policy: ``lru``, ``fifo`` or ``sieve``.
        read_rate: lookups per second of each key at this cache.
        inval_rate: writes (invalidations) per second of each key at this cache.
        ttl_s: the TTL set at insertion, or None.
        t_c: the characteristic time in seconds (``inf`` when capacity never binds).
    """
    p = _check(policy)
    r = np.asarray(read_rate, dtype=np.float64)
    w = np.asarray(inval_rate, dtype=np.float64)
    ttl = math.inf if ttl_s is None else float(ttl_s)
    if p == "fifo":
        return _renewal(r, _life(w, min(t_c, ttl)))
    rw = r + w
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(rw > 0, r / np.where(rw > 0, rw, 1.0), 0.0)
    lru = share * _one_minus_exp(rw * t_c)
    if math.isinf(ttl):
        return np.asarray(lru)
    return np.asarray(np.minimum(lru, _renewal(r, _life(w, ttl))))


def characteristic_time(
    policy: str,
    read_rate: npt.ArrayLike,
    inval_rate: npt.ArrayLike,
    weight: npt.ArrayLike,
    ttl_s: float | None,
    capacity: float,
) -> float:
    """``T_C`` with ``sum(weight x P(resident)) = capacity``, or ``inf`` (TTL-bound cache).

    Args:
        policy: ``lru``, ``fifo`` or ``sieve``.
        read_rate: per key class, lookups per second of one key.
        inval_rate: per key class, writes per second of one key.
        weight: per key class, how many keys it stands for.
        ttl_s: the TTL, or None.
        capacity: the cache's capacity in keys (> 0).

    Raises:
        ConfigError: an unknown policy or a capacity <= 0.
    """
    if not capacity > 0:
        raise ConfigError(f"capacity (={capacity}) must be > 0")
    wt = np.asarray(weight, dtype=np.float64)

    def filled(t: float) -> float:
        return float(np.dot(wt, hit_probability(policy, read_rate, inval_rate, ttl_s, t)))

    if filled(math.inf) <= capacity:
        return math.inf
    lo, hi = 1e-9, 1.0
    while filled(hi) < capacity:
        lo, hi = hi, hi * 16.0
        if hi > 1e15:
            return math.inf
    for _ in range(100):  # bisection on a log scale; the fill is increasing in t
        mid = math.sqrt(lo * hi)
        if filled(mid) < capacity:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-9:
            break
    return math.sqrt(lo * hi)


def resident_after(
    policy: str,
    read_rate: npt.ArrayLike,
    inval_rate: npt.ArrayLike,
    ttl_s: float | None,
    t_c: float,
    elapsed_s: float,
) -> FloatArray:
    """Per key, P(still resident ``elapsed_s`` after a steady-state start, untouched since).

    An untouched key that was resident at the start leaves when its idle time passes
    ``T_C`` (LRU, SIEVE) or its insertion timer runs out (FIFO, TTL); its age at the
    start is taken as uniform over the timer. Writes after the start are not counted
    here: the caller applies them as they happen.
    """
    e = max(0.0, float(elapsed_s))
    p = _check(policy)
    r = np.asarray(read_rate, dtype=np.float64)
    w = np.asarray(inval_rate, dtype=np.float64)
    ttl = math.inf if ttl_s is None else float(ttl_s)
    if p == "fifo":
        tau = min(t_c, ttl)
        full = hit_probability(p, r, w, ttl_s, t_c)
        return full if math.isinf(tau) else full * max(0.0, 1.0 - e / tau)
    lru = hit_probability("lru", r, w, None, t_c - e if t_c > e else 0.0)
    if math.isinf(ttl):
        return lru
    timer = _renewal(r, _life(w, ttl)) * max(0.0, 1.0 - e / ttl)
    return np.asarray(np.minimum(lru, timer))
