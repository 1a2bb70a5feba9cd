"""Streaming metrics: log-bucketed latency histograms and counters.

Nothing here keeps per-request records, so memory does not grow with the number of
requests. :class:`LogHistogram` buckets a value ``x > 0`` by ``floor(log(x) / log(1.01))``
and reports the geometric midpoint of a bucket, so every quantile it returns is within
**0.5 %** (``sqrt(1.01) - 1 = 0.4988 %``) of a sample value of that rank; zero is its own
bucket. Means are exact (running sums).

Examples:
    >>> h = LogHistogram()
    >>> for v in (1.0, 2.0, 3.0, 4.0):
    ...     h.add(v)
    >>> round(h.quantile(0.5), 2), h.count, h.mean
    (2.0, 4, 2.5)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "GAMMA",
    "RELATIVE_ERROR_BOUND",
    "LogHistogram",
    "bin_into",
    "bin_values",
    "bucket",
    "bucket_value",
    "buckets",
]

#: ratio between consecutive bucket bounds.
GAMMA = 1.01
_INV_LOG_G = 1.0 / math.log(GAMMA)
#: worst-case relative error of a reported quantile (bucket midpoint vs any value in it).
RELATIVE_ERROR_BOUND = math.sqrt(GAMMA) - 1.0
_ZERO = -(10**9)  # bucket of exact zeros


class LogHistogram:
    """A mergeable histogram with relative error <= 0.5 % on quantiles.

    Attributes:
        count: values added.
        total: their exact sum.
        counts: bucket index -> count (``_ZERO`` holds exact zeros).
    """

    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.counts: dict[int, int] = {}

    def add(self, x: float) -> None:
        """Add one value (>= 0)."""
        b = math.floor(math.log(x) * _INV_LOG_G) if x > 0.0 else _ZERO
        c = self.counts
        c[b] = c.get(b, 0) + 1
        self.count += 1
        self.total += x

    def add_bucket(self, b: int, x: float) -> None:
        """Add a value whose bucket ``b`` the caller already computed (see :func:`bucket`)."""
        c = self.counts
        c[b] = c.get(b, 0) + 1
        self.count += 1
        self.total += x

    def copy(self) -> LogHistogram:
        """An independent copy."""
        h = LogHistogram()
        h.count, h.total, h.counts = self.count, self.total, dict(self.counts)
        return h

    def merge(self, other: LogHistogram) -> None:
        """Add every value of ``other`` to this histogram."""
        c = self.counts
        for b, n in other.counts.items():
            c[b] = c.get(b, 0) + n
        self.count += other.count
        self.total += other.total

    @property
    def mean(self) -> float:
        """Exact mean (0.0 when empty)."""
        return self.total / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """The nearest-rank ``q`` quantile (0 < q <= 1); 0.0 when empty."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        """Several quantiles in one pass over the sorted buckets."""
        qs = list(qs)
        if not self.count:
            return [0.0] * len(qs)
        keys = sorted(self.counts)
        out: list[float] = []
        for q in qs:
            rank = max(1, math.ceil(q * self.count))
            seen = 0
            for b in keys:
                seen += self.counts[b]
                if seen >= rank:
                    out.append(bucket_value(b))
                    break
        return out

    def count_le(self, x: float) -> int:
        """How many values fall in buckets at or below the bucket of ``x``."""
        lim = bucket(x)
        return sum(n for b, n in self.counts.items() if b <= lim)


def bucket(x: float) -> int:
    """The bucket index of ``x`` (>= 0)."""
    return math.floor(math.log(x) * _INV_LOG_G) if x > 0.0 else _ZERO


def bucket_value(b: int) -> float:
    """The value reported for bucket ``b``: the geometric midpoint of its bounds."""
    return 0.0 if b == _ZERO else GAMMA ** (b + 0.5)


def buckets(x: np.ndarray) -> np.ndarray:
    """:func:`bucket` of every value, vectorised."""
    b = np.full(x.shape, _ZERO, dtype=np.int64)
    pos = x > 0.0
    b[pos] = np.floor(np.log(x[pos]) * _INV_LOG_G)
    return b


def bin_into(
    hists: Sequence[LogHistogram], group: np.ndarray, b: np.ndarray, x: np.ndarray
) -> None:
    """Add values ``x`` with buckets ``b`` to ``hists[group]`` (vectorised ``add_bucket``).

    Counts are exact; each histogram's total grows by the sum of its values.
    """
    if not len(x):
        return
    key = group * (1 << 32) + (b + (1 << 31))
    uk, cnt = np.unique(key, return_counts=True)
    for k, n in zip(uk.tolist(), cnt.tolist(), strict=False):
        g, bb = divmod(k, 1 << 32)
        c = hists[g].counts
        bb -= 1 << 31
        c[bb] = c.get(bb, 0) + n
    size = len(hists)
    cnt_g = np.bincount(group, minlength=size)
    tot_g = np.bincount(group, weights=x, minlength=size)
    for g in np.flatnonzero(cnt_g).tolist():
        h = hists[g]
        h.count += int(cnt_g[g])
        h.total += float(tot_g[g])


def bin_values(hist: LogHistogram, x: np.ndarray) -> None:
    """Add every value of ``x`` to ``hist`` (the same buckets as :meth:`LogHistogram.add`)."""
    bin_into([hist], np.zeros(len(x), dtype=np.int64), buckets(x), x)
