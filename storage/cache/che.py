"""Analytic hit ratios under the independent reference model (IRM).

Che's approximation (Che, Tung and Wang, 2002) for an LRU cache of ``C`` objects: find
the characteristic time ``T`` with ``sum_i (1 - exp(-p_i T)) = C``; object ``i`` then
hits with probability ``1 - exp(-p_i T)`` and the hit ratio is ``sum_i p_i (1 - exp(-p_i T))``.
It matches exact LRU simulation on Zipf traces to about 2e-4 (sim-anchors §3.3). It is
an oracle for tests and the planner, not a substitute for keyed simulation of
hierarchies: an L1's miss stream is not IRM (sim-anchors §3.5).

Examples:
    >>> p = zipf_popularities(1_000_000, alpha=0.8)
    >>> round(che_hit_ratio(p, 10_000), 4)
    0.2319
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from geoshard.errors import ConfigError, InputError

__all__ = [
    "che_characteristic_time",
    "che_hit_ratio",
    "fifo_hit_ratio",
    "irm_requests",
    "lru_miss_stream_popularities",
    "zipf_popularities",
]

FloatArray = npt.NDArray[np.float64]


def zipf_popularities(n_objects: int, alpha: float) -> FloatArray:
    """Request probabilities of a Zipf law: ``p_i ∝ i**-alpha`` for ranks ``i = 1..n``.

    Args:
        n_objects: number of distinct objects, > 0.
        alpha: skew, >= 0 (0 is uniform).

    Returns:
        A float64 array of length ``n_objects`` summing to 1, most popular first.

    Raises:
        ConfigError: ``n_objects <= 0`` or ``alpha < 0``.
    """
    if n_objects <= 0:
        raise ConfigError(f"n_objects(={n_objects}) must be > 0.")
    if not alpha >= 0:
        raise ConfigError(f"alpha(={alpha}) must be >= 0.")
    weights = np.arange(1, n_objects + 1, dtype=np.float64) ** -float(alpha)
    out: FloatArray = weights / weights.sum()
    return out


def irm_requests(
    popularities: npt.ArrayLike, n_requests: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Draw an IRM request stream: object indices (0-based ranks) with the given probabilities.

    Args:
        popularities: per-object request probabilities (normalised here).
        n_requests: length of the stream, >= 0.
        rng: the NumPy generator to draw from (seed it for reproducible streams).

    Returns:
        An int64 array of ``n_requests`` object indices.
    """
    p = _as_popularities(popularities)
    cdf = np.cumsum(p)
    cdf[-1] = 1.0
    return np.searchsorted(cdf, rng.random(n_requests), side="right").astype(np.int64)


def _as_popularities(popularities: npt.ArrayLike) -> FloatArray:
    p = np.asarray(popularities, dtype=np.float64).ravel()
    if p.size == 0:
        raise InputError("popularities is empty; give at least one object.")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise InputError("popularities must be finite and >= 0.")
    total = p.sum()
    if total <= 0:
        raise InputError("popularities sum to 0; give at least one positive value.")
    out: FloatArray = p / total
    return out


def _check_cache_capacity(capacity: float) -> None:
    if not capacity > 0:
        raise ConfigError(f"capacity(={capacity}) must be > 0.")


def _solve(p: FloatArray, capacity: float, occupancy: object) -> float:
    """Smallest T with occupancy(T) = capacity (occupancy increasing, from 0)."""

    def f(t: float) -> float:
        return float(occupancy(p, t)) - capacity  # type: ignore[operator]

    hi = capacity
    while f(hi) < 0:
        hi *= 2.0
    try:
        # scipy is a dev/planner extra, not a runtime dependency of geoshard: import late.
        from scipy.optimize import brentq
    except ImportError:  # pragma: no cover - exercised only without scipy
        lo = 0.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
        return 0.5 * (lo + hi)
    return float(brentq(f, 0.0, hi, xtol=1e-9 * hi, rtol=1e-12, maxiter=500))


def _lru_occupancy(p: FloatArray, t: float) -> float:
    return float(-np.expm1(-p * t).sum())


def che_characteristic_time(popularities: npt.ArrayLike, capacity: float) -> float:
    """Che's characteristic time ``T_C`` (in requests) of an LRU cache of ``capacity`` objects.

    Args:
        popularities: per-object request probabilities (normalised here).
        capacity: cache size in objects, > 0.

    Returns:
        ``T_C``; ``inf`` when the cache holds every object with non-zero popularity.

    Raises:
        ConfigError: ``capacity <= 0``.
        InputError: empty, negative, non-finite or all-zero popularities.
    """
    _check_cache_capacity(capacity)
    p = _as_popularities(popularities)
    p = p[p > 0]
    if capacity >= p.size:
        return float("inf")
    return _solve(p, float(capacity), _lru_occupancy)


def che_hit_ratio(popularities: npt.ArrayLike, capacity: float) -> float:
    """Che's approximation of the LRU hit ratio under IRM.

    Args:
        popularities: per-object request probabilities (normalised here), for example
            :func:`zipf_popularities`.
        capacity: cache size in objects, > 0.

    Returns:
        The steady-state hit ratio in [0, 1]; 1.0 when every object fits.

    Raises:
        ConfigError: ``capacity <= 0``.
        InputError: empty, negative, non-finite or all-zero popularities.

    Examples:
        >>> round(che_hit_ratio(zipf_popularities(1_000_000, 1.0), 1_000), 4)
        0.4031
    """
    t = che_characteristic_time(popularities, capacity)
    if t == float("inf"):
        return 1.0
    p = _as_popularities(popularities)
    return float(np.dot(p, -np.expm1(-p * t)))


def fifo_hit_ratio(popularities: npt.ArrayLike, capacity: float) -> float:
    """IRM hit ratio of FIFO (and RANDOM): ``sum p_i T/(1+p_i T) = C``, ``h_i = p_i T/(1+p_i T)``.

    Args:
        popularities: per-object request probabilities (normalised here).
        capacity: cache size in objects, > 0.

    Returns:
        The steady-state hit ratio in [0, 1]; 1.0 when every object fits.

    Raises:
        ConfigError: ``capacity <= 0``.
        InputError: empty, negative, non-finite or all-zero popularities.
    """
    _check_cache_capacity(capacity)
    p = _as_popularities(popularities)
    if capacity >= np.count_nonzero(p):
        return 1.0

    def occupancy(q: FloatArray, t: float) -> float:
        return float((q * t / (1.0 + q * t)).sum())

    t = _solve(p, float(capacity), occupancy)
    return float(np.dot(p, p * t / (1.0 + p * t)))


def lru_miss_stream_popularities(popularities: npt.ArrayLike, capacity: float) -> FloatArray:
    """Popularities of the miss stream of an LRU cache, treated as IRM (Che on the filter).

    Rates ``m_i = p_i exp(-p_i T_C)``, normalised. Feeding them to :func:`che_hit_ratio`
    gives the classic filtered-stream estimate of an L2's local hit ratio, which is good
    when L2 is much larger than L1 and badly overstated when they are comparable
    (the miss stream is far from IRM; sim-anchors §3.5).

    Args:
        popularities: per-object request probabilities of the stream entering the cache.
        capacity: the (L1) cache size in objects, > 0.

    Returns:
        Normalised miss-stream probabilities, same length as ``popularities``.
    """
    t = che_characteristic_time(popularities, capacity)
    p = _as_popularities(popularities)
    if t == float("inf"):
        raise InputError("the cache holds every object; its miss stream is empty.")
    m = p * np.exp(-p * t)
    out: FloatArray = m / m.sum()
    return out
