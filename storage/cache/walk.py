"""The cache walk: lookup order, fill-above, invalidation and the residency admit rule.

One walk for every stack of cache levels, called by the simulator's request path and by
the running system's :class:`~geoshard.storage.caches.ReadThroughCache` alike, so the two
make the same decisions on the same trace:

1. **Lookup order**: levels are looked up L1 first; the first level that has the key
   answers and the levels below it are not asked (:func:`lookup`).
2. **Fill above**: the levels above the one that answered admit the key; after a miss
   everywhere (the tier answered), every level admits it (:func:`fill`).
3. **Residency admit**: a level whose region may not store the key's data is skipped and
   the skip is reported as a *refusal*; the read itself still answers from where the
   data was. A forbidden fill is never attempted and never raises mid-read: the same
   rule in the simulator and in a deployment.
4. **Invalidation**: a write drops the key from every level (:func:`invalidate`).

Pure logic: levels are objects with ``lookup(key, now) -> bool``, ``admit(key, size,
now)`` and ``invalidate(key) -> bool`` (every :class:`~geoshard.storage.cache.CachePolicy`
has them); time is passed in.

Examples:
    >>> from geoshard.storage.cache import LRU
    >>> levels = [LRU(capacity_items=1), LRU(capacity_items=10)]
    >>> lookup(levels, "a", 0.0)
    -1
    >>> fill(levels, "a", 1, 0.0, -1, (True, True))
    0
    >>> lookup(levels, "a", 1.0)
    0
    >>> fill(levels, "b", 1, 2.0, -1, (True, False))   # level 1 may not store "b"
    2
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Protocol

__all__ = ["CacheLevelOps", "Invalidates", "fill", "invalidate", "lookup", "refused_levels"]


class Invalidates(Protocol):
    """A level that can drop a key."""

    def invalidate(self, key: Any) -> bool:
        """Drop ``key``; True if it was resident."""


class CacheLevelOps(Protocol):
    """What the walk needs of one level."""

    def lookup(self, key: Any, now: float = 0.0) -> bool:
        """True on a hit (and the level counts it and refreshes the entry)."""

    def admit(self, key: Any, size: int = 1, now: float = 0.0) -> object:
        """Insert ``key`` (evicting as the level's policy says)."""

    def invalidate(self, key: Any) -> bool:
        """Drop ``key``; True if it was resident."""


def lookup(levels: Sequence[CacheLevelOps], key: Hashable, now: float) -> int:
    """Look ``key`` up level by level; the index of the level that hit, or -1.

    Levels below the one that hits are not looked up.
    """
    for i, level in enumerate(levels):
        if level.lookup(key, now):
            return i
    return -1


def fill(
    levels: Sequence[CacheLevelOps],
    key: Hashable,
    size: int,
    now: float,
    hit: int,
    store_ok: Sequence[bool],
) -> int:
    """Admit ``key`` into the levels above ``hit`` (every level when ``hit`` is -1).

    Args:
        levels: the stack, L1 first.
        key: the key.
        size: its size in bytes (byte-capacity levels charge it).
        now: the current time in seconds.
        hit: the level that answered (from :func:`lookup`), or -1 after a miss everywhere.
        store_ok: per level, whether the residency policy lets that level's region store
            this key's data (see :meth:`ResidencyPolicy.is_allowed`).

    Returns:
        A bitmask of the levels whose fill residency refused (bit ``i`` for level ``i``);
        0 when every fill above ``hit`` was made.
    """
    refused = 0
    top = hit if hit >= 0 else len(levels)
    for i in range(top):
        if store_ok[i]:
            levels[i].admit(key, size, now)
        else:
            refused |= 1 << i
    return refused


def invalidate(levels: Sequence[Invalidates], key: Hashable) -> int:
    """Drop ``key`` from every level (a write made it stale); how many levels held it."""
    held = 0
    for level in levels:
        if level.invalidate(key):
            held += 1
    return held


def refused_levels(mask: int) -> tuple[int, ...]:
    """The level indices set in a refusal bitmask from :func:`fill`."""
    return tuple(i for i in range(mask.bit_length()) if mask >> i & 1)
