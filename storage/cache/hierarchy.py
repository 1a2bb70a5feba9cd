"""A keyed multi-level cache: L1 -> L2 -> ..., filled on the way back.

A request looks L1 up, then L2 only on an L1 miss, and so on; the level that hits (or
the origin, when every level misses) serves it, and every level above it admits the
key. Levels are independent caches ("inclusive" in the sense of fill-on-the-way-back;
an L2 may still evict a key that L1 holds). Because decisions are made on real keys,
the L2 sees L1's true miss stream, which is far from independent of L1's hits: with
comparable sizes an inclusive L2 is nearly useless, which independent hit rolls
(``1 - (1-h1)(1-h2)``) miss completely (sim-anchors §3.5).

Examples:
    >>> from geoshard.storage.cache import LRU
    >>> tiers = CacheHierarchy([LRU(capacity_items=1), LRU(capacity_items=10)])
    >>> [tiers.access(k) for k in ["a", "b", "a", "a"]]
    [None, None, 1, 0]
    >>> tiers.stats.local_hit_ratios
    (0.25, 0.3333333333333333)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from geoshard.errors import ConfigError

from .policies import CachePolicy

__all__ = ["CacheHierarchy", "HierarchyStats"]


@dataclass(frozen=True)
class HierarchyStats:
    """Per-level counters of a :class:`CacheHierarchy`, as seen by this hierarchy.

    Attributes:
        requests: requests that entered L1.
        lookups: per level, requests that reached it (L1 sees all, L2 sees L1's misses, ...).
        hits: per level, requests it served.
    """

    requests: int
    lookups: tuple[int, ...]
    hits: tuple[int, ...]

    @property
    def local_hit_ratios(self) -> tuple[float, ...]:
        """Per level, hits / requests that reached it (0.0 for a level no request reached)."""
        return tuple(h / n if n else 0.0 for h, n in zip(self.hits, self.lookups, strict=True))

    @property
    def hit_ratio(self) -> float:
        """Share of requests served by any level (the combined hit ratio)."""
        return sum(self.hits) / self.requests if self.requests else 0.0

    @property
    def origin_requests(self) -> int:
        """Requests that missed every level and went to the origin (the tier below)."""
        return self.requests - sum(self.hits)


class CacheHierarchy:
    """Levels of caches looked up in order and filled on the way back.

    Args:
        levels: the caches, L1 first. A level may be shared with other hierarchies
            (several L1s over one regional L2); its own ``stats`` then aggregate them,
            while this hierarchy's :attr:`stats` count only its own requests.

    Raises:
        ConfigError: no level, or the same cache object twice.
    """

    def __init__(self, levels: Sequence[CachePolicy]) -> None:
        levels = tuple(levels)
        if not levels:
            raise ConfigError("a cache hierarchy needs at least one level; got none.")
        if len({id(c) for c in levels}) != len(levels):
            raise ConfigError(
                "a cache object appears twice in the hierarchy; give each level its own cache."
            )
        self._levels = levels
        self._lookups = [0] * len(levels)
        self._hits = [0] * len(levels)
        self._requests = 0

    @property
    def levels(self) -> tuple[CachePolicy, ...]:
        """The caches, L1 first."""
        return self._levels

    @property
    def stats(self) -> HierarchyStats:
        """A snapshot of this hierarchy's per-level counters."""
        return HierarchyStats(self._requests, tuple(self._lookups), tuple(self._hits))

    def reset_stats(self) -> None:
        """Zero this hierarchy's counters and every level's (after a warm-up)."""
        self._requests = 0
        self._lookups = [0] * len(self._levels)
        self._hits = [0] * len(self._levels)
        for level in self._levels:
            level.reset_stats()

    def access(self, key: Hashable, size: int = 1, now: float = 0.0) -> int | None:
        """Serve one request: look levels up in order, then fill the levels above the hit.

        Args:
            key: the object's key.
            size: the object's size in bytes (used by byte-capacity levels on admission).
            now: the current time in seconds (TTL expiry).

        Returns:
            The 0-based index of the level that hit, or ``None`` when every level missed
            (the request goes to the origin and every level admits the key).
        """
        self._requests += 1
        levels = self._levels
        served: int | None = None
        for i, level in enumerate(levels):
            self._lookups[i] += 1
            if level.lookup(key, now):
                self._hits[i] += 1
                served = i
                break
        for j in range(len(levels) if served is None else served):
            levels[j].admit(key, size, now)
        return served

    def invalidate(self, key: Hashable) -> bool:
        """Remove ``key`` from every level; True if any level held it."""
        found = False
        for level in self._levels:
            found = level.invalidate(key) or found
        return found
