"""Delay distributions on a grid: how the planner adds up a request's latency.

A request's latency is a sum of independent parts (network legs, queueing waits, service
times, cache lookups) and a mixture over outcomes (which cache level hit, which region
holds the primary). :class:`Delay` is a distribution of such a delay: an exact constant
``offset_ms`` plus a probability mass function on a grid of step ``dt_ms``
(:class:`Grid`), bin ``k`` standing for the value ``offset + k dt`` (mass of
``((k - 1/2) dt, (k + 1/2) dt]``, rounded to the nearest bin). Sums are convolutions
(FFT), mixtures are weighted sums after aligning offsets, a stage budget is
``min(delay, budget)``. Mass pushed past the grid's end is kept in ``beyond`` (it
counts as above any quantile the grid can show). Quantiles interpolate inside a bin, so
the error of a sum of ``m`` parts is below ``m x dt``.

Continuous service times are discretised from their CDFs: exponential and log-normal
exactly (``math.erf``), gamma through the regularised incomplete gamma function (series
and continued fraction, as in Numerical Recipes); queueing waits from
:class:`~geoshard.sim.queueing.WaitModel` (an atom at 0 and an exponential tail).

Examples:
    >>> g = Grid(dt_ms=0.01, size=4096)
    >>> d = g.exponential(1.0).plus(g.constant(2.0))
    >>> round(d.quantile(0.5), 2)       # 2 + ln 2
    2.69
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoshard.spec import ConstantDist, ExponentialDist, GammaDist, LognormalDist

from .queueing import WaitModel

__all__ = ["Delay", "Grid", "service_cv2", "service_mean_ms"]

ServiceDist = ExponentialDist | ConstantDist | LognormalDist | GammaDist


def service_mean_ms(d: ServiceDist) -> float:
    """The mean of a spec service-time distribution, ms."""
    return float(d.ms) if isinstance(d, ConstantDist) else float(d.mean_ms)


def service_cv2(d: ServiceDist) -> float:
    """The squared coefficient of variation of a spec service-time distribution."""
    if isinstance(d, ExponentialDist):
        return 1.0
    if isinstance(d, LognormalDist):
        return math.expm1(d.sigma * d.sigma)
    if isinstance(d, GammaDist):
        return float(d.cv * d.cv)
    return 0.0


def service_high_ms(d: ServiceDist, tail: float = 1e-7) -> float:
    """A value the service time exceeds with probability at most about ``tail``."""
    if isinstance(d, ConstantDist):
        return float(d.ms)
    if isinstance(d, ExponentialDist):
        return d.mean_ms * math.log(1.0 / tail)
    if isinstance(d, LognormalDist):
        mu = math.log(d.mean_ms) - d.sigma * d.sigma / 2.0
        return math.exp(mu + 5.3 * d.sigma)
    shape = 1.0 / (d.cv * d.cv)
    scale = d.mean_ms / shape
    return scale * (shape + 6.0 * math.sqrt(shape) + 20.0 + math.log(1.0 / tail))


# --------------------------------------------------------------------------- CDFs


def _erf_array(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.frompyfunc(math.erf, 1, 1)(x), dtype=np.float64)


def _gamma_p(a: float, x: float) -> float:
    """The regularised lower incomplete gamma function ``P(a, x)``."""
    if x <= 0:
        return 0.0
    gln = math.lgamma(a)
    if x < a + 1.0:  # series
        ap, total, term = a, 1.0 / a, 1.0 / a
        for _ in range(10_000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return min(1.0, total * math.exp(-x + a * math.log(x) - gln))
    # continued fraction (modified Lentz) for Q(a, x)
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    dd = 1.0 / b
    h = dd
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        dd = an * dd + b
        dd = tiny if abs(dd) < tiny else dd
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        dd = 1.0 / dd
        delta = dd * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return max(0.0, 1.0 - math.exp(-x + a * math.log(x) - gln) * h)


def _cdf(d: ServiceDist, x: np.ndarray) -> np.ndarray:
    """The CDF of a continuous service time at ``x >= 0``."""
    if isinstance(d, ExponentialDist):
        return np.asarray(-np.expm1(-x / d.mean_ms))
    if isinstance(d, LognormalDist):
        mu = math.log(d.mean_ms) - d.sigma * d.sigma / 2.0
        out = np.zeros_like(x)
        pos = x > 0
        z = (np.log(x[pos]) - mu) / (d.sigma * math.sqrt(2.0))
        out[pos] = 0.5 * (1.0 + _erf_array(z))
        return out
    assert isinstance(d, GammaDist)
    shape = 1.0 / (d.cv * d.cv)
    scale = d.mean_ms / shape
    f = np.frompyfunc(lambda v: _gamma_p(shape, v / scale), 1, 1)
    return np.asarray(f(x), dtype=np.float64)


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Grid:
    """The grid every :class:`Delay` of one composition lives on.

    Attributes:
        dt_ms: the step, ms.
        size: bins; values from 0 to ``(size - 1) x dt_ms`` above a delay's offset.
    """

    dt_ms: float
    size: int

    @classmethod
    def covering(cls, horizon_ms: float, size: int = 8192) -> Grid:
        """A grid of ``size`` bins whose last bin is at least ``horizon_ms``."""
        return cls(max(horizon_ms, 1e-3) / (size - 1), size)

    def constant(self, ms: float) -> Delay:
        """A constant delay (exact: only the offset)."""
        pmf = np.zeros(self.size)
        pmf[0] = 1.0
        return Delay(self, float(ms), pmf, 0.0)

    def _from_cdf(self, cdf_at_edges: np.ndarray) -> Delay:
        # edges at (k + 1/2) dt for k = 0 .. size - 1
        pmf = np.diff(np.concatenate(([0.0], cdf_at_edges)))
        np.maximum(pmf, 0.0, out=pmf)
        beyond = max(0.0, 1.0 - float(cdf_at_edges[-1]))
        return Delay(self, 0.0, pmf, beyond)

    def _edges(self) -> np.ndarray:
        return (np.arange(self.size, dtype=np.float64) + 0.5) * self.dt_ms

    def exponential(self, mean_ms: float) -> Delay:
        """An exponential delay of mean ``mean_ms``."""
        if mean_ms <= 0:
            return self.constant(0.0)
        return self._from_cdf(-np.expm1(-self._edges() / mean_ms))

    def service(self, d: ServiceDist) -> Delay:
        """A spec service-time distribution."""
        if isinstance(d, ConstantDist):
            return self.constant(float(d.ms))
        return self._from_cdf(_cdf(d, self._edges()))

    def wait(self, w: WaitModel) -> Delay:
        """A queueing wait: ``1 - p_wait`` at 0, an exponential tail above.

        An unstable pool (offered load >= servers) has no steady state: all its mass is
        ``beyond`` the grid.
        """
        if not w.stable:
            return Delay(self, 0.0, np.zeros(self.size), 1.0)
        if w.p_wait <= 0 or w.cond_mean_ms <= 0:
            return self.constant(0.0)
        tail = self.exponential(w.cond_mean_ms)
        pmf = tail.pmf * w.p_wait
        pmf[0] += 1.0 - w.p_wait
        return Delay(self, 0.0, pmf, tail.beyond * w.p_wait)


# --------------------------------------------------------------------------- delays


@dataclass(frozen=True)
class Delay:
    """A delay distribution: ``offset_ms`` plus a pmf on the grid (and mass beyond it).

    Attributes:
        grid: the grid.
        offset_ms: an exact constant part.
        pmf: mass per bin (bin ``k`` is ``offset + k dt``).
        beyond: mass past the last bin.
    """

    grid: Grid
    offset_ms: float
    pmf: np.ndarray
    beyond: float

    def plus(self, other: Delay) -> Delay:
        """The delay of the sum of two independent delays."""
        a, b = self.pmf, other.pmf
        n = self.grid.size
        nb_a, nb_b = _support(a), _support(b)
        if nb_a == 1 or nb_b == 1:  # one has all its mass in bin 0: a scaling
            pmf = b * a[0] if nb_a == 1 else a * b[0]
            lost = 0.0
        else:
            m = nb_a + nb_b - 1
            size = 1 << (m - 1).bit_length()
            full = np.fft.irfft(np.fft.rfft(a[:nb_a], size) * np.fft.rfft(b[:nb_b], size), size)[:m]
            np.maximum(full, 0.0, out=full)
            pmf = np.zeros(n)
            keep = min(n, m)
            pmf[:keep] = full[:keep]
            lost = float(full[keep:].sum())
        # beyond: the mass that left the grid (a sub-distribution keeps its own deficit)
        beyond = self.beyond + other.beyond - self.beyond * other.beyond + lost
        return Delay(self.grid, self.offset_ms + other.offset_ms, pmf, min(1.0, beyond))

    def shifted(self, ms: float) -> Delay:
        """This delay plus a constant."""
        return Delay(self.grid, self.offset_ms + ms, self.pmf, self.beyond)

    def capped(self, budget_ms: float) -> Delay:
        """``min(delay, budget)``: a stage that misses its budget ends at the budget."""
        k = (budget_ms - self.offset_ms) / self.grid.dt_ms
        if k < 0:
            return self.grid.constant(budget_ms)
        kb = round(k)
        if kb >= self.grid.size - 1 and self.beyond == 0:
            return self
        kb = min(kb, self.grid.size - 1)
        pmf = self.pmf.copy()
        over = float(pmf[kb + 1 :].sum()) + self.beyond
        pmf[kb + 1 :] = 0.0
        pmf[kb] += over
        return Delay(self.grid, self.offset_ms, pmf, 0.0)

    def truncated(self, budget_ms: float) -> Delay:
        """The part of this delay within ``budget_ms``: a sub-distribution whose mass is
        ``P(delay <= budget)`` (convolving such parts gives ``P(sum <= x and every part
        within its budget)``)."""
        k = (budget_ms - self.offset_ms) / self.grid.dt_ms
        if k < 0:
            return Delay(self.grid, self.offset_ms, np.zeros(self.grid.size), 0.0)
        kb = min(round(k), self.grid.size - 1)
        pmf = self.pmf.copy()
        pmf[kb + 1 :] = 0.0
        return Delay(self.grid, self.offset_ms, pmf, 0.0)

    @property
    def mass(self) -> float:
        """The total mass on the grid (1 - ``beyond`` for a distribution)."""
        return float(self.pmf.sum())

    def cdf(self, x_ms: float) -> float:
        """``P(delay <= x)`` on the grid (for a sub-distribution: its mass up to ``x``)."""
        dt = self.grid.dt_ms
        u = (x_ms - self.offset_ms) / dt + 0.5
        if u <= 0:
            return 0.0
        k = int(u)
        if k >= self.grid.size:
            return self.mass
        return float(self.pmf[:k].sum()) + float(self.pmf[k]) * (u - k)

    def survival(self, x_ms: float) -> float:
        """``P(delay > x)`` (interpolated inside a bin)."""
        dt = self.grid.dt_ms
        u = (x_ms - self.offset_ms) / dt + 0.5  # in bins, from the lower edge of bin 0
        if u <= 0:
            return 1.0
        k = int(u)
        if k >= self.grid.size:
            return self.beyond
        below = float(self.pmf[:k].sum()) + float(self.pmf[k]) * (u - k)
        return max(0.0, 1.0 - below)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile, ms (``inf`` when it lies beyond the grid)."""
        cdf = np.cumsum(self.pmf)
        k = int(np.searchsorted(cdf, q, side="left"))
        if k >= self.grid.size:
            return math.inf
        before = float(cdf[k - 1]) if k else 0.0
        mass = float(self.pmf[k])
        frac = (q - before) / mass if mass > 0 else 0.0
        lo = (k - 0.5) * self.grid.dt_ms if k else 0.0
        width = self.grid.dt_ms if k else 0.5 * self.grid.dt_ms
        return self.offset_ms + lo + frac * width

    @property
    def mean_ms(self) -> float:
        """The mean; mass beyond the grid counts at the grid's end (``inf`` when it is more
        than 1e-6, where that would understate it)."""
        if self.beyond > 1e-6:
            return math.inf
        k = np.arange(self.grid.size, dtype=np.float64)
        last = (self.grid.size - 1) * self.beyond
        return self.offset_ms + (float(np.dot(self.pmf, k)) + last) * self.grid.dt_ms

    @staticmethod
    def mixture(parts: Sequence[tuple[float, Delay]]) -> Delay:
        """The mixture ``sum w_i D_i`` (weights are normalised)."""
        items = [(w, d) for w, d in parts if w > 0]
        if not items:
            raise ValueError("a mixture needs at least one part with weight > 0")
        total = sum(w for w, _ in items)
        grid = items[0][1].grid
        base = min(d.offset_ms for _, d in items)
        pmf = np.zeros(grid.size)
        beyond = 0.0
        for w, d in items:
            s = round((d.offset_ms - base) / grid.dt_ms)
            wn = w / total
            if s < grid.size:
                pmf[s:] += wn * d.pmf[: grid.size - s]
                beyond += wn * (d.beyond + float(d.pmf[grid.size - s :].sum()))
            else:
                beyond += wn
        return Delay(grid, base, pmf, min(1.0, beyond))


def _support(pmf: np.ndarray) -> int:
    """One past the last bin with mass (at least 1)."""
    nz = np.flatnonzero(pmf > 0)
    return int(nz[-1]) + 1 if nz.size else 1
