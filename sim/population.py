"""Who the users are, how popular each one is, and which of them a scaled run simulates.

A jurisdiction's ``N`` users have bounded-Zipf(``alpha``) popularity: the user of rank
``r`` (0 = most popular) gets a share ``p_r = (r + 1)^-alpha / Z`` of the jurisdiction's
requests. Ranks map to user ids by a fixed affine permutation (``id = (r x a + b) mod
N``), so popular users spread over the ring; :meth:`Population.rank_of` inverts it.

**The faithful slice** (``--scale R``, see ``docs/simulator.md``). A run at scale ``R``
simulates an unbiased sample of a fraction ``R`` of all requests:

* **tail**: every ``1/R``-th rank from rank ``H`` on (systematic sampling by popularity,
  with a seeded phase), with **all** of its requests: the caches see each sampled key at
  its full rate (SHARDS-style spatial sampling), so with capacities ``R x`` the tail's
  share they hold the same part of the key space as at full scale;
* **head**: the ``H`` most popular users: each of their requests is simulated with
  probability ``m``, and their cache lookups are decided by the steady-state model's
  per-key hit probabilities (:mod:`geoshard.sim.warm`). ``H`` is the larger of
  ``ceil(16 / R)`` (users whose single share would dwarf the slice, and who stay hot in
  every cache only at their full rate) and the smallest head that keeps the **sampling
  error of a hot node's load** under ``HEAD_NODE_ERROR`` (1 %, one standard deviation):
  a node's load is the sum of the popularities of the users it owns, and sampling the
  tail keeps each user with probability ``R``, so the relative error of a node's share
  is ``sqrt(k (1 - R) / R x sum_{r >= H} p_r^2)`` for ``k`` nodes on the ring
  (:func:`head_for_node_error`). With ``H = 16 / R`` alone, a 1 % slice of
  ``examples/global.yaml`` had 3.4 % (up to 9 % on single nodes) because a few dozen
  mid-popularity users carried much of each node's load; the head is then ~90,000
  users of each jurisdiction.

``m`` is set so that the simulated share is exactly ``R`` in expectation
(``m x head + sampled tail = R``). Pools keep every node and stretch service times by
``1 / R`` (:class:`~geoshard.sim.pools.Pool`), so per-node load and queueing are those
of the full topology. At ``R = 1`` there is no head: every user is simulated.

Examples:
    >>> import numpy as np
    >>> pop = Population("eu", 1000, 0.8, offset=0, scale=1.0, phase=0.0)
    >>> pop.head, round(pop.tail_share, 12), pop.materialize_head
    (0, 1.0, 1.0)
    >>> int(pop.rank_of(pop.user_of_rank(7)))
    7
"""

from __future__ import annotations

import math

import numpy as np

from geoshard.errors import ConfigError

__all__ = [
    "EXACT_RANKS",
    "HEAD_FACTOR",
    "HEAD_NODE_ERROR",
    "Population",
    "head_for_node_error",
    "zipf_normaliser",
]

#: ranks whose weights are summed and sampled exactly; beyond, a continuous approximation.
EXACT_RANKS = 1 << 20
#: the head of a scaled run: at least the ``HEAD_FACTOR / R`` most popular users.
HEAD_FACTOR = 16.0
#: the head of a scaled run is large enough that sampling the tail changes a hot node's
#: share of the load by at most this (relative, one standard deviation).
HEAD_NODE_ERROR = 0.01


def _power_integral(lo: float, hi: float, alpha: float) -> float:
    """``integral_lo^hi x^-alpha dx`` (lo, hi > 0)."""
    if hi <= lo:
        return 0.0
    if abs(alpha - 1.0) < 1e-12:
        return math.log(hi / lo)
    return (hi ** (1 - alpha) - lo ** (1 - alpha)) / (1 - alpha)


def _power_inverse(lo: float, frac: np.ndarray, total: float, alpha: float) -> np.ndarray:
    """``x`` with ``integral_lo^x t^-alpha dt = frac x total`` (vectorised)."""
    if abs(alpha - 1.0) < 1e-12:
        return np.asarray(lo * np.exp(frac * total))
    base = lo ** (1 - alpha)
    return np.asarray((base + frac * total * (1 - alpha)) ** (1 / (1 - alpha)))


def zipf_normaliser(n: int, alpha: float) -> float:
    """``Z = sum_{r < n} (r + 1)^-alpha``: exact for the first 2^20 ranks, an integral beyond."""
    head = min(n, EXACT_RANKS)
    z = float(np.sum(np.arange(1, head + 1, dtype=np.float64) ** (-alpha)))
    if n > head:
        z += _power_integral(head + 0.5, n + 0.5, alpha)
    return z


def head_for_node_error(
    n: int, alpha: float, z: float, scale: float, nodes: int, error: float = HEAD_NODE_ERROR
) -> int:
    """The smallest head ``H`` for which sampling the tail at ``scale`` leaves each of
    ``nodes`` ring nodes' share of the load within ``error`` (relative, one standard
    deviation); at most ``min(n, EXACT_RANKS)``.

    Each tail user is kept with probability ``R``, so a node owning a ``1 / k`` share of
    the users has a load estimate with relative variance ``k (1 - R) / R x S(H)`` where
    ``S(H) = sum_{r >= H} p_r^2`` (``p_r = (r + 1)^-alpha / z``), an integral here.

    Examples:
        >>> z = zipf_normaliser(600_000_000, 0.8)
        >>> 80_000 < head_for_node_error(600_000_000, 0.8, z, 0.01, 48) < 110_000
        True
        >>> head_for_node_error(1000, 0.8, zipf_normaliser(1000, 0.8), 1.0, 48)
        0
    """
    if scale >= 1 or nodes < 1 or error <= 0:
        return 0
    top = min(n, EXACT_RANKS)
    budget = error * error * scale / ((1.0 - scale) * nodes) * z * z

    def tail_sq(h: int) -> float:  # sum_{r >= h} (r + 1)^-2 alpha, continuous
        return _power_integral(h + 0.5, n + 0.5, 2.0 * alpha)

    if tail_sq(0) <= budget:
        return 0
    lo, hi = 0, top
    if tail_sq(hi) > budget:
        return top
    while hi - lo > 1:  # tail_sq(lo) > budget >= tail_sq(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if tail_sq(mid) > budget else (lo, mid)
    return hi


class _PowerSampler:
    """Draws ``k`` in ``[0, count)`` with weight ``(base + k x step)^-alpha``.

    Exact CDF for the first 2^20 values, the inverse of the continuous density beyond.
    """

    def __init__(
        self,
        base: float,
        step: float,
        count: int,
        alpha: float,
        exact_weights: np.ndarray | None = None,
    ) -> None:
        self.base, self.step, self.count, self.alpha = base, step, count, alpha
        exact = min(count, EXACT_RANKS)
        w = (
            exact_weights
            if exact_weights is not None
            else (base + np.arange(exact, dtype=np.float64) * step) ** (-alpha)
        )
        self.exact_mass = float(w.sum())
        self.cdf = np.cumsum(w)
        lo = base + (exact - 0.5) * step
        hi = base + (count - 0.5) * step
        # in units of k: integral over k of (base + k step)^-alpha = (1/step) x integral over x
        self.tail_mass = _power_integral(lo, hi, alpha) / step if count > exact else 0.0
        self.mass = self.exact_mass + self.tail_mass
        self._exact = exact
        self._lo = lo

    def draw(self, u: np.ndarray) -> np.ndarray:
        """Map uniforms in [0, 1) to ``k`` values (int64)."""
        x = u * self.mass
        k = np.searchsorted(self.cdf, x, side="right").astype(np.int64)
        if self.count > self._exact:
            tail = x >= self.exact_mass
            if tail.any():
                frac = (x[tail] - self.exact_mass) / self.tail_mass
                xs = _power_inverse(self._lo, frac, self.tail_mass * self.step, self.alpha)
                k[tail] = np.floor((xs - self.base) / self.step + 0.5).astype(np.int64)
        return np.minimum(k, self.count - 1)


class Population:
    """The users of one jurisdiction: popularity, id permutation and the slice.

    Args:
        jurisdiction: its name.
        n: number of users (>= 1).
        alpha: Zipf exponent (>= 0).
        offset: the first user id of this jurisdiction (ids are ``offset + [0, n)``).
        scale: the slice ``R`` in (0, 1].
        phase: the systematic sample's phase in [0, 1) (from the seed).
        head_factor: the head is at least the ``head_factor / R`` most popular users (0:
            no head at all).
        nodes: ring nodes sharing the jurisdiction's keys in one region (the head is
            large enough for their loads, :func:`head_for_node_error`; 0: no such rule).

    Attributes:
        head: ``H``, the number of head ranks.
        head_share: the share of the jurisdiction's requests made by head users.
        tail_share: the share made by the sampled tail users (about ``R x`` the tail).
        materialize_head: ``m``, the probability that a head request is simulated.
        keys: how many distinct users the slice holds (head + sampled tail).
        tail_keys: how many of them are sampled tail users (the keyed caches' users).
    """

    def __init__(
        self,
        jurisdiction: str,
        n: int,
        alpha: float,
        *,
        offset: int,
        scale: float,
        phase: float,
        head_factor: float = HEAD_FACTOR,
        nodes: int = 0,
    ) -> None:
        if n < 1:
            raise ConfigError(f"jurisdiction '{jurisdiction}' needs at least 1 user (got {n})")
        if not 0 < scale <= 1:
            raise ConfigError(f"scale (={scale}) must be in (0, 1]")
        self.jurisdiction, self.n, self.alpha, self.offset = jurisdiction, n, alpha, offset
        self.scale = scale
        self.z = zipf_normaliser(n, alpha)
        h = 0 if scale >= 1 else min(n, math.ceil(head_factor / scale), EXACT_RANKS)
        if head_factor > 0:
            h = max(h, head_for_node_error(n, alpha, self.z, scale, nodes))
        self.head = h
        self._head = _PowerSampler(1.0, 1.0, h, alpha) if h else None
        head_mass = self._head.mass if self._head else 0.0
        self.head_share = head_mass / self.z
        stride = 1.0 / scale
        self._stride = stride
        self._phase = phase if scale < 1 else 0.0
        # tail ranks r_k = H + floor((k + phase) x stride), k = 0 .. K-1, r_k < n
        count = 0 if h >= n else max(0, math.ceil((n - h) / stride - self._phase))
        while count and h + math.floor((count - 1 + self._phase) * stride) >= n:
            count -= 1
        self.tail_count = count
        # weight of k: (r_k + 1)^-alpha, exact for the first 2^20 k, then approximately
        # (H + 1 + (k + phase) stride - 1/2)^-alpha (the floor takes half a rank on average)
        self._tail = None
        if count:
            ks = np.arange(min(count, EXACT_RANKS), dtype=np.float64)
            exact_w = (h + np.floor((ks + self._phase) * stride) + 1.0) ** (-alpha)
            base = h + 1.0 + self._phase * stride - (0.5 if stride > 1 else 0.0)
            self._tail = _PowerSampler(base, stride, count, alpha, exact_w)
        tail_mass = self._tail.mass if self._tail else 0.0
        self.tail_share = tail_mass / self.z
        if scale >= 1:
            self.materialize_head = 1.0
        elif self.head_share > 0:
            target = scale * (1.0 - self.head_share)  # what the tail ought to carry
            m = scale + (target - self.tail_share) / self.head_share
            self.materialize_head = min(1.0, max(0.0, m))
        else:
            self.materialize_head = scale
        self.keys = h + count
        self.tail_keys = count
        self._a = 2_654_435_761 % n or 1
        while math.gcd(self._a, n) != 1:
            self._a += 1
        self._b = n // 3
        self._a_inv = pow(self._a, -1, n) if n > 1 else 0

    # ------------------------------------------------------------------ shares
    @property
    def sampled_share(self) -> float:
        """The share of requests the slice simulates: ``m x head + tail`` (~ R)."""
        return self.materialize_head * self.head_share + self.tail_share

    def popularity(self, rank: np.ndarray | int) -> np.ndarray:
        """``p_r``: the share of this jurisdiction's requests made by the user of rank ``r``."""
        return np.asarray((np.asarray(rank, dtype=np.float64) + 1.0) ** (-self.alpha) / self.z)

    # ------------------------------------------------------------------ ids
    def user_of_rank(self, rank: np.ndarray | int) -> np.ndarray:
        """Global user ids of ranks (the fixed permutation, plus the jurisdiction offset)."""
        r = np.asarray(rank, dtype=np.int64)
        return np.asarray((r * self._a + self._b) % self.n + self.offset)

    def rank_of(self, user: int) -> int:
        """The rank of a global user id of this jurisdiction (the permutation's inverse)."""
        return ((user - self.offset - self._b) * self._a_inv) % self.n if self.n > 1 else 0

    # ------------------------------------------------------------------ sampling
    def draw(
        self, rng: np.random.Generator, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``size`` simulated requests: ``(user ids, is_head, ranks)``.

        A request is a head request with probability ``m x head / (m x head + tail)``; its
        user is drawn by popularity among the head (resp. the sampled tail).
        """
        head = self.materialize_head * self.head_share
        total = head + self.tail_share
        u = rng.random(size)
        is_head = u * total < head
        ranks = np.empty(size, dtype=np.int64)
        v = rng.random(size)
        if self._head is not None and is_head.any():
            ranks[is_head] = self._head.draw(v[is_head])
        tail = ~is_head
        if self._tail is not None and tail.any():
            k = self._tail.draw(v[tail])
            ranks[tail] = self.head + np.floor((k + self._phase) * self._stride).astype(np.int64)
        np.minimum(ranks, self.n - 1, out=ranks)
        return self.user_of_rank(ranks), is_head, ranks
