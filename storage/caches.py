"""The running system's caches: L1 (in-process), L2 (regional, Redis) and the regional
layer, composed into a read-through reader with single-flight loads and invalidation on
write.

The eviction decisions of an in-process level are made by the very policy objects the
simulator uses (:func:`geoshard.storage.cache.make_policy`); this module only adds the
values, a lock, a clock and the residency guard.

* :class:`LocalCache`: a :class:`~geoshard.storage.cache.CachePolicy` plus a dict of values.
* :class:`StoreCache`: a level backed by a :class:`~geoshard.storage.base.HotStore`
  (Redis in a deployment), every entry written with the level's TTL. Its capacity is
  enforced by the server, not here: run that Redis with ``maxmemory`` sized from the
  level and ``maxmemory-policy allkeys-lru`` (see docs/storage-hot.md).
* :class:`ReadThroughCache`: walks the levels with the shared cache walk
  (:mod:`geoshard.storage.cache.walk`, the code the simulator runs: lookup order, fill
  above, residency admit, invalidation), and on a miss everywhere calls the loader (the
  tier) **once per key** however many threads miss at the same time (single-flight).
  :meth:`ReadThroughCache.write_through` writes the tier, then invalidates the key in
  every level; a load that was in flight during the write does not put its (stale)
  value back.

Caches are stores: personal data cached in a region passes the same residency check as a
tier write, so an EU user's features are never cached in ``us-east``. The walk asks each
level :meth:`Cache.may_store` first and skips a forbidden fill (counted in
``ReadThroughCache.refusals``); a direct :meth:`Cache.put` of such data raises
:class:`~geoshard.errors.ResidencyError` and writes nothing.

Examples:
    >>> from geoshard.keys import DataKey
    >>> l1 = LocalCache("l1", make_policy("lru", capacity_items=100, ttl_s=30),
    ...                 region="us-east", residency=None)
    >>> tier = {DataKey("item_catalog", "sku-1"): b"{}"}
    >>> reader = ReadThroughCache([l1], loader=tier.get)
    >>> reader.get(DataKey("item_catalog", "sku-1")), reader.get(DataKey("item_catalog", "sku-1"))
    (b'{}', b'{}')
    >>> reader.stats.hits, reader.loads
    ((1,), 1)
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from geoshard.errors import BackendError, ConfigError
from geoshard.keys import DataKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import CacheLevel, Caches
from geoshard.storage.base import HotStore, Tier, validate_value
from geoshard.storage.cache import CachePolicy, HierarchyStats, make_policy
from geoshard.storage.cache import walk as cache_walk

__all__ = [
    "Cache",
    "LocalCache",
    "ReadThroughCache",
    "StoreCache",
    "build_cache_levels",
]

#: The spec's cache levels, in lookup order.
LEVEL_NAMES: tuple[str, ...] = ("l1", "l2", "regional")


class Cache(ABC):
    """One cache level: values by :class:`DataKey`, admitted after a residency check."""

    name: str

    @abstractmethod
    def get(self, key: DataKey) -> bytes | None:
        """The cached value, or None on a miss (absent or expired)."""

    @abstractmethod
    def put(self, key: DataKey, value: bytes) -> None:
        """Admit ``key`` (residency and payload checked first; may evict others)."""

    @abstractmethod
    def invalidate(self, key: DataKey) -> bool:
        """Drop ``key``; True if it was cached."""

    @abstractmethod
    def may_store(self, key: DataKey) -> bool:
        """True when this level's region may hold ``key`` (residency); never raises."""


def _may_store(residency: ResidencyPolicy | None, region: str, key: DataKey) -> bool:
    """The residency admit rule of a cache level (the same as a tier write's guard)."""
    if key.jurisdiction is None:
        return True
    if residency is None:
        return False
    return residency.is_allowed(key.jurisdiction, key.data_class, region, "store")


class LocalCache(Tier, Cache):
    """An in-process level: a cache policy decides, a dict holds the values.

    Thread-safe. Time comes from ``clock`` (monotonic seconds), so tests and the
    simulator can drive TTL expiry.

    Args:
        name: the level's name (``l1``, ...), used in stats and errors.
        policy: an empty policy from :func:`~geoshard.storage.cache.make_policy`; a
            byte-capacity policy charges ``len(value)`` per entry.
        region: where this process runs (residency is checked against it).
        residency: the residency policy; None only for caches that never see personal data.
        clock: monotonic seconds.

    Examples:
        >>> c = LocalCache("l1", make_policy("lru", capacity_items=1), region="us-east",
        ...                residency=None)
        >>> c.put(DataKey("item_catalog", "a"), b"1"); c.put(DataKey("item_catalog", "b"), b"2")
        >>> c.get(DataKey("item_catalog", "a")) is None
        True
    """

    tier = "hot"

    def __init__(
        self,
        name: str,
        policy: CachePolicy,
        *,
        region: str,
        residency: ResidencyPolicy | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(region, residency)
        if len(policy):
            raise ConfigError(
                f"cache level '{name}' needs an empty policy; got one with {len(policy)} entries"
            )
        self.name = name
        self.policy = policy
        self._values: dict[DataKey, bytes] = {}
        self._clock = clock
        self._lock = threading.Lock()

    def get(self, key: DataKey) -> bytes | None:
        """The value on a hit (the policy counts it and refreshes recency), else None."""
        with self._lock:
            if self.policy.lookup(key, self._clock()):
                return self._values[key]
            self._values.pop(key, None)  # expired entries were dropped by the policy
            return None

    def put(self, key: DataKey, value: bytes) -> None:
        """Admit ``key``; evicted keys lose their values. Checks residency first."""
        data = validate_value(value)
        self.guard_write([key])
        with self._lock:
            for victim in self.policy.admit(key, len(data), self._clock()):
                self._values.pop(victim, None)  # type: ignore[call-overload]
            if key in self.policy:
                self._values[key] = data
            else:
                self._values.pop(key, None)  # larger than the whole cache: not admitted

    def invalidate(self, key: DataKey) -> bool:
        """Drop ``key``; True if it was resident."""
        with self._lock:
            self._values.pop(key, None)
            return self.policy.invalidate(key)

    def may_store(self, key: DataKey) -> bool:
        """True when this process's region may cache ``key`` (residency)."""
        return _may_store(self.residency, self.region, key)

    def __len__(self) -> int:
        """Resident entries."""
        return len(self._values)


class StoreCache(Cache):
    """A level backed by a hot store (a regional Redis), each entry with the level's TTL.

    The store's own ``put`` runs the residency guard and payload checks. Capacity is the
    server's job (``maxmemory`` + ``maxmemory-policy allkeys-lru``).

    Args:
        name: the level's name (``l2``, ``regional``).
        store: where values live.
        ttl_s: TTL of every entry; None keeps entries until evicted or invalidated.
    """

    def __init__(self, name: str, store: HotStore, ttl_s: float | None) -> None:
        self.name = name
        self.store = store
        self.ttl_s = ttl_s

    def get(self, key: DataKey) -> bytes | None:
        """The value, or None (absent, expired or evicted by the server)."""
        return self.store.get(key)

    def put(self, key: DataKey, value: bytes) -> None:
        """Write with the level's TTL (residency checked by the store)."""
        self.store.put(key, value, ttl_s=self.ttl_s)

    def invalidate(self, key: DataKey) -> bool:
        """Delete ``key`` from the store; True if it existed."""
        return self.store.delete(key)

    def may_store(self, key: DataKey) -> bool:
        """True when the store's region may hold ``key`` (residency)."""
        return _may_store(self.store.residency, self.store.region, key)


def build_cache_levels(
    caches: Caches,
    *,
    region: str,
    residency: ResidencyPolicy | None,
    stores: Mapping[str, HotStore] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[Cache]:
    """Build the levels of a spec's ``caches:`` section, in lookup order.

    ``l1`` is always in-process. ``l2`` and ``regional`` use the store given for them in
    ``stores`` (Redis in a deployment), or else an in-process :class:`LocalCache` with the
    level's policy and capacity (the simulator's view, and tests).

    Args:
        caches: the spec's ``caches`` model.
        region: the region the caches serve.
        residency: the residency policy of the topology.
        stores: optional ``{"l2": store, "regional": store}``.
        clock: monotonic seconds, for the in-process levels.

    Raises:
        ConfigError: a store for a level the spec does not configure, or for ``l1``.

    Examples:
        >>> from geoshard.spec import load_spec
        >>> spec = load_spec("examples/local.yaml")             # doctest: +SKIP
        >>> [c.name for c in build_cache_levels(spec.caches, region="eu-west",
        ...                                     residency=None)]  # doctest: +SKIP
        ['l1', 'l2', 'regional']
    """
    stores = dict(stores or {})
    if "l1" in stores:
        raise ConfigError("the l1 cache is in-process; give stores only for 'l2' or 'regional'")
    levels: list[Cache] = []
    for name in LEVEL_NAMES:
        level: CacheLevel | None = getattr(caches, name)
        if level is None:
            continue
        store = stores.pop(name, None)
        if store is not None:
            levels.append(StoreCache(name, store, level.ttl_s))
            continue
        policy = make_policy(
            level.policy,
            capacity_items=level.capacity_items,
            capacity_bytes=level.capacity_bytes,
            ttl_s=level.ttl_s,
        )
        levels.append(LocalCache(name, policy, region=region, residency=residency, clock=clock))
    if stores:
        raise ConfigError(
            f"stores given for cache levels the spec does not configure: "
            f"{', '.join(sorted(stores))}; add them under caches: or drop them"
        )
    return levels


@dataclass
class _Flight:
    """One in-flight load that concurrent misses on the same key wait for."""

    event: threading.Event = field(default_factory=threading.Event)
    value: bytes | None = None
    error: BaseException | None = None
    stale: bool = False  # invalidated while loading: do not cache the value


class _Probe:
    """One level seen through the walk's interface for one read: remembers the value."""

    __slots__ = ("cache", "value")

    def __init__(self, cache: Cache, value: bytes | None = None) -> None:
        self.cache = cache
        self.value = value

    def lookup(self, key: DataKey, now: float = 0.0) -> bool:
        self.value = self.cache.get(key)
        return self.value is not None

    def admit(self, key: DataKey, size: int = 1, now: float = 0.0) -> None:
        assert self.value is not None
        self.cache.put(key, self.value)

    def invalidate(self, key: DataKey) -> bool:
        return self.cache.invalidate(key)


#: stripes of the write counters of :class:`ReadThroughCache` (a power of 2): a read that
#: copies a lower level's value upwards drops the copy again if an invalidation of a key
#: of its stripe was in progress when it started, or ran before its copy was made.
_GEN_STRIPES = 1024


class ReadThroughCache:
    """Levels looked up in order, filled on the way back, with single-flight loads.

    Args:
        levels: the caches, L1 first (see :func:`build_cache_levels`).
        loader: reads the tier on a miss everywhere; None means "absent" and is not
            cached (no negative caching).
        writer: writes the tier in :meth:`write_through`.
        load_timeout_s: how long a thread waits for another thread's load of the same key.

    Raises:
        ConfigError: no level, or the same level object twice.

    Examples:
        >>> tier: dict[DataKey, bytes] = {}
        >>> l1 = LocalCache("l1", make_policy("lru", capacity_items=10), region="us-east",
        ...                 residency=None)
        >>> reader = ReadThroughCache([l1], loader=tier.get, writer=tier.__setitem__)
        >>> key = DataKey("item_catalog", "sku-1")
        >>> reader.write_through(key, b"v1"); reader.get(key)
        b'v1'
        >>> reader.write_through(key, b"v2"); reader.get(key)
        b'v2'
    """

    def __init__(
        self,
        levels: Sequence[Cache],
        loader: Callable[[DataKey], bytes | None],
        *,
        writer: Callable[[DataKey, bytes], None] | None = None,
        load_timeout_s: float = 10.0,
    ) -> None:
        levels = tuple(levels)
        if not levels:
            raise ConfigError("a read-through cache needs at least one level; got none.")
        if len({id(c) for c in levels}) != len(levels):
            raise ConfigError("a cache level appears twice; give each level its own cache.")
        if not load_timeout_s > 0:
            raise ConfigError(f"load_timeout_s(={load_timeout_s}) must be > 0.")
        self.levels = levels
        self._loader = loader
        self._writer = writer
        self._load_timeout_s = load_timeout_s
        self._lock = threading.Lock()
        self._flights: dict[DataKey, _Flight] = {}
        # per stripe of keys (bounded memory): invalidations in progress, and finished
        self._writing = [0] * _GEN_STRIPES
        self._written = [0] * _GEN_STRIPES
        self._requests = 0
        self._lookups = [0] * len(levels)
        self._hits = [0] * len(levels)
        self.loads = 0
        """Loader calls made (one per single-flight group)."""
        self.refusals = [0] * len(levels)
        """Per level, fills skipped because its region may not hold the key (residency)."""

    @property
    def stats(self) -> HierarchyStats:
        """Per-level lookups and hits, as :class:`~geoshard.storage.cache.HierarchyStats`."""
        with self._lock:
            return HierarchyStats(self._requests, tuple(self._lookups), tuple(self._hits))

    def get(self, key: DataKey) -> bytes | None:
        """The value from the first level that has it, else from the loader (single-flight).

        Levels are walked by :mod:`geoshard.storage.cache.walk`; a level whose region may
        not hold ``key`` is not filled (counted in :attr:`refusals`).

        Raises:
            BackendError: another thread's load of this key took longer than
                ``load_timeout_s``.
        """
        stripe = hash(key) & (_GEN_STRIPES - 1)
        with self._lock:
            self._requests += 1
            busy, done = self._writing[stripe], self._written[stripe]
        probes = [_Probe(level) for level in self.levels]
        hit = cache_walk.lookup(probes, key, 0.0)
        with self._lock:
            for i in range(hit + 1 if hit >= 0 else len(probes)):
                self._lookups[i] += 1
            if hit >= 0:
                self._hits[hit] += 1
        if hit < 0:
            return self._load(key)
        value = probes[hit].value
        if hit:
            for p in probes[:hit]:
                p.value = value
            self._fill(probes, key, hit)
            with self._lock:
                raced = busy or self._writing[stripe] or self._written[stripe] != done
            if raced:  # a write ran during this read: the fill may be stale
                cache_walk.invalidate(probes[:hit], key)
        return value

    def _fill(self, probes: list[_Probe], key: DataKey, hit: int) -> None:
        store_ok = [level.may_store(key) for level in self.levels]
        refused = cache_walk.fill(probes, key, 0, 0.0, hit, store_ok)
        if refused:
            with self._lock:
                for i in cache_walk.refused_levels(refused):
                    self.refusals[i] += 1

    def _load(self, key: DataKey) -> bytes | None:
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            if not flight.event.wait(self._load_timeout_s):
                raise BackendError(
                    f"waited {self._load_timeout_s:g} s for another request's "
                    f"load of {key}; the tier is slow or stuck"
                )
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            with self._lock:
                self.loads += 1
            value = self._loader(key)
            flight.value = value
            if value is not None:
                with self._lock:
                    fresh = not flight.stale
                if fresh:  # a write during the load made this value stale: do not cache it
                    probes = [_Probe(level, value) for level in self.levels]
                    self._fill(probes, key, -1)
                    with self._lock:
                        raced = flight.stale
                    if raced:  # a write slipped in between the check and the fill
                        cache_walk.invalidate(probes, key)
            return value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.event.set()

    def invalidate(self, key: DataKey) -> None:
        """Drop ``key`` from every level; an in-flight load of it will not be cached.

        A read that found the key in a lower level while this runs, and copied it into
        the levels above, drops that copy again (see :meth:`get`).
        """
        stripe = hash(key) & (_GEN_STRIPES - 1)
        with self._lock:
            self._writing[stripe] += 1
            flight = self._flights.get(key)
            if flight is not None:
                flight.stale = True
        try:
            cache_walk.invalidate(self.levels, key)
        finally:
            with self._lock:
                self._writing[stripe] -= 1
                self._written[stripe] += 1

    def write_through(self, key: DataKey, value: bytes) -> None:
        """Write the tier first, then invalidate ``key`` in every level.

        The next read loads the new value. If the tier write raises, the caches are left
        as they were and the error propagates.

        Raises:
            ConfigError: no ``writer`` was given.
        """
        if self._writer is None:
            raise ConfigError(
                "this ReadThroughCache has no writer; pass writer= to use write_through"
            )
        self._writer(key, value)
        self.invalidate(key)
