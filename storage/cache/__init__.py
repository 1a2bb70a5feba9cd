"""geoshard.storage.cache: cache policies as pure data structures.

The simulator and the running system share these objects, so a simulated cache hit is a
real decision on a real key. Nothing here does I/O or reads a clock; time is passed in.

- :mod:`.policies`: :class:`LRU`, :class:`FIFO`, :class:`Sieve` (item or byte capacity,
  optional TTL), the :data:`POLICIES` registry and :func:`make_policy`.
- :mod:`.hierarchy`: :class:`CacheHierarchy`, keyed L1 -> L2 -> ... lookups.
- :mod:`.che`: Che's approximation and IRM helpers, analytic oracles for tests and the
  planner.

Examples:
    >>> from geoshard.storage.cache import make_policy
    >>> l1 = make_policy("lru", capacity_items=1000, ttl_s=30.0)
    >>> l1.access("user:42", now=0.0), l1.access("user:42", now=10.0)
    (False, True)
"""

from __future__ import annotations

from . import walk
from .che import (
    che_characteristic_time,
    che_hit_ratio,
    fifo_hit_ratio,
    irm_requests,
    lru_miss_stream_popularities,
    zipf_popularities,
)
from .hierarchy import CacheHierarchy, HierarchyStats
from .policies import FIFO, LRU, POLICIES, CachePolicy, CacheStats, Sieve, make_policy

__all__ = [
    "FIFO",
    "LRU",
    "POLICIES",
    "CacheHierarchy",
    "CachePolicy",
    "CacheStats",
    "HierarchyStats",
    "Sieve",
    "che_characteristic_time",
    "che_hit_ratio",
    "fifo_hit_ratio",
    "irm_requests",
    "lru_miss_stream_popularities",
    "make_policy",
    "walk",
    "zipf_popularities",
]
