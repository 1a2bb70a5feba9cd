"""Cache eviction policies as pure data structures: LRU, FIFO and SIEVE.

The simulator and the running system use the very same objects: a simulated L1 decides
a hit by asking one of these caches about a real key, never by rolling a die. There is
no I/O and no clock here; time is an argument (``now``, in seconds, any origin).

Every policy has a capacity counted either in items (``capacity_items=``, every object
costs 1) or in bytes (``capacity_bytes=``, an object costs its ``size``), and an optional
``ttl_s``: an entry admitted at ``now`` expires at ``now + ttl_s`` (set at insertion
only, like Redis ``SET ... EX`` followed by plain ``GET``). Expired entries are removed
lazily, when a lookup finds them; until then they occupy space and may be evicted.

Byte mode follows libCacheSim's semantics, so a replay reproduces its miss ratios: on a
miss, an object larger than the whole cache is not admitted; otherwise victims are
evicted until ``used + size <= capacity`` and the object is inserted with its size. A hit
does not change an object's size.

Examples:
    >>> cache = LRU(capacity_items=2)
    >>> [cache.access(k) for k in ["a", "b", "a", "c", "b"]]
    [False, False, True, False, False]
    >>> cache.stats.hits, cache.stats.misses, cache.stats.evictions
    (1, 4, 2)
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from geoshard.errors import ConfigError, InputError, did_you_mean

__all__ = [
    "FIFO",
    "LRU",
    "POLICIES",
    "CachePolicy",
    "CacheStats",
    "Sieve",
    "make_policy",
]


@dataclass(frozen=True)
class CacheStats:
    """Counters of one cache since it was built or since :meth:`CachePolicy.reset_stats`.

    Attributes:
        hits: lookups that found a live entry.
        misses: lookups that found nothing or an expired entry.
        evictions: entries removed by the policy to make room (not expiries, not
            invalidations).
        expirations: entries found expired by a lookup and removed.
    """

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0

    @property
    def requests(self) -> int:
        """Number of lookups (hits + misses)."""
        return self.hits + self.misses

    @property
    def hit_ratio(self) -> float:
        """Hits / lookups; 0.0 before the first lookup."""
        n = self.hits + self.misses
        return self.hits / n if n else 0.0

    @property
    def miss_ratio(self) -> float:
        """Misses / lookups; 0.0 before the first lookup."""
        n = self.hits + self.misses
        return self.misses / n if n else 0.0


def _zero() -> float:
    return 0.0


def _check_capacity(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name}(={value!r}) must be an integer > 0.")
    if value <= 0:
        raise ConfigError(f"{name}(={value}) must be > 0.")
    return int(value)


class CachePolicy(ABC):
    """The interface every cache policy implements, with the shared bookkeeping.

    Give exactly one of ``capacity_items`` and ``capacity_bytes``.

    Args:
        capacity_items: capacity in objects; every object costs 1 whatever its size.
        capacity_bytes: capacity in bytes; an object costs its ``size``.
        ttl_s: time to live in seconds, set at admission; ``None`` means no expiry.

    Raises:
        ConfigError: both or neither capacity given, a capacity that is not an
            integer > 0, or ``ttl_s <= 0``.
    """

    #: registry name of the policy (``"lru"``, ``"fifo"``, ``"sieve"``).
    name: ClassVar[str] = ""

    def __init__(
        self,
        *,
        capacity_items: int | float | None = None,
        capacity_bytes: int | float | None = None,
        ttl_s: int | float | None = None,
    ) -> None:
        if capacity_items is not None and capacity_bytes is not None:
            raise ConfigError(
                "give exactly one of capacity_items or capacity_bytes, not both "
                f"(got capacity_items={capacity_items}, capacity_bytes={capacity_bytes})."
            )
        if capacity_items is None and capacity_bytes is None:
            raise ConfigError("give exactly one of capacity_items or capacity_bytes; got neither.")
        if capacity_bytes is not None:
            self._capacity = _check_capacity("capacity_bytes", capacity_bytes)
            self._in_bytes = True
        else:
            self._capacity = _check_capacity("capacity_items", capacity_items)
            self._in_bytes = False
        # a new name, not ttl_s narrowed: mypyc (core/native.py) types the narrowed
        # variable as None and refuses the float at run time
        ttl: float | None = None
        if ttl_s is not None:
            if isinstance(ttl_s, bool) or not isinstance(ttl_s, numbers.Real) or not ttl_s > 0:
                raise ConfigError(f"ttl_s(={ttl_s!r}) must be > 0, or None for no expiry.")
            ttl = float(ttl_s)
        self._ttl_s: float | None = ttl
        self._used = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expirations = 0
        # a warm start (see start_warm): residents that are counted, not held
        self._virtual = 0
        self._unit = 1
        self._oracle: Callable[[Hashable, float], float | None] | None = None
        self._tomb: set[Hashable] = set()
        self._clock: Callable[[], float] = _zero

    # -- configuration -------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Capacity, in items or in bytes (see :attr:`in_bytes`)."""
        return self._capacity

    @property
    def in_bytes(self) -> bool:
        """True when capacity and :attr:`used` count bytes, False when they count items."""
        return self._in_bytes

    @property
    def ttl_s(self) -> float | None:
        """Time to live of an entry in seconds, or ``None`` (no expiry)."""
        return self._ttl_s

    # -- state ---------------------------------------------------------------------

    @property
    def used(self) -> int:
        """Space taken by resident entries (expired ones included until removed)."""
        return self._used

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the hit, miss, eviction and expiry counters."""
        return CacheStats(self._hits, self._misses, self._evictions, self._expirations)

    def reset_stats(self) -> None:
        """Zero the counters (for example after a warm-up); the contents stay."""
        self._hits = self._misses = self._evictions = self._expirations = 0

    def _cost(self, key: Hashable, size: int) -> int:
        if size < 0:
            raise InputError(f"size(={size}) of key {key!r} must be >= 0.")
        return size if self._in_bytes else 1

    def __repr__(self) -> str:
        unit = "bytes" if self._in_bytes else "items"
        ttl = f", ttl_s={self._ttl_s}" if self._ttl_s is not None else ""
        return (
            f"{type(self).__name__}(capacity_{unit}={self._capacity}{ttl}, "
            f"used={self._used}, len={len(self)})"
        )

    # -- a steady-state start ------------------------------------------------------

    def start_warm(
        self,
        oracle: Callable[[Hashable, float], float | None],
        virtual: int,
        unit: int = 1,
        clock: Callable[[], float] = _zero,
    ) -> None:
        """Start as if full of residents drawn from a model, without holding them.

        ``virtual`` cost units of capacity are taken by *virtual* residents. The first
        lookup of a key asks ``oracle(key, now)``: the time the key was admitted if it
        is one of them (it then becomes a real entry, with its remaining TTL, and the
        lookup hits), else None. Admissions evict virtual residents before real entries
        (they are the oldest under LRU and FIFO); an invalidated virtual resident frees
        its room. A key the cache held or refused is never asked about again. When no
        virtual resident is left the cache is an ordinary one. The simulator's warm
        start uses this (:mod:`geoshard.sim.warm`); a deployment's caches never do.

        Args:
            oracle: ``(key, now) -> admission time | None``; it must only ever turn a
                key from resident to not resident as time passes, never back.
            virtual: cost units of virtual residents (at most the capacity).
            unit: the cost of one virtual resident (1 in item mode; the value size in
                byte mode).
            clock: the current time, for invalidations (which carry none).
        """
        self._oracle = oracle
        self._virtual = max(0, min(int(virtual), self._capacity - self._used))
        self._unit = unit
        self._clock = clock

    @property
    def virtual(self) -> int:
        """Cost units of virtual residents left from :meth:`start_warm` (0: none)."""
        return self._virtual

    def _warm_hit(self, key: Hashable, now: float) -> bool:
        """A first lookup of ``key`` while virtual residents are left (counted a miss)."""
        if key in self._tomb:
            return False
        at = self._oracle(key, now)  # type: ignore[misc]
        if at is None:
            return False
        self._virtual -= self._unit
        self._misses -= 1
        self._hits += 1
        self._admit_resident(key, at)
        return True

    def _admit_resident(self, key: Hashable, at: float) -> None:
        """Make a virtual resident, admitted at ``at``, a real entry (room is there)."""
        self.admit(key, self._unit, at)

    def _make_room(self, cost: int) -> None:
        """Evict virtual residents so that ``cost`` more units fit beside the real ones."""
        need = self._used + cost + self._virtual - self._capacity
        if need > 0:
            self._virtual = max(0, self._virtual - need)

    def _warm_invalidate(self, key: Hashable) -> bool:
        """Invalidate a key the cache does not hold: it may be a virtual resident."""
        if key in self._tomb:
            return False
        if self._oracle(key, self._clock()) is None:  # type: ignore[misc]
            return False  # not resident, and never will be again
        self._tomb.add(key)
        self._virtual -= self._unit
        return True

    # -- the operations ------------------------------------------------------------

    @abstractmethod
    def lookup(self, key: Hashable, now: float = 0.0) -> bool:
        """Look ``key`` up; count a hit or a miss.

        A hit refreshes the entry as the policy says (LRU: most recently used; SIEVE:
        visited; FIFO: nothing). An entry whose expiry time is ``<= now`` is removed and
        counts as a miss. Nothing is admitted on a miss (see :meth:`admit`).

        Args:
            key: any hashable key.
            now: the current time in seconds, compared with entries' expiry times.

        Returns:
            True on a hit.
        """

    @abstractmethod
    def admit(self, key: Hashable, size: int = 1, now: float = 0.0) -> list[Hashable]:
        """Insert ``key`` (after a miss), evicting as needed; return the evicted keys.

        An object that costs more than the whole capacity is not admitted (and a resident
        copy of ``key``, now stale, is dropped). Admitting a resident key replaces it as
        if it were new: new size, new expiry, newest position. The counters of lookups
        are not touched; evictions are counted.

        Args:
            key: any hashable key.
            size: the object's size in bytes (its cost in byte mode; ignored in item mode).
            now: the current time in seconds; the entry expires at ``now + ttl_s``.

        Returns:
            The keys evicted to make room, oldest victim first.

        Raises:
            InputError: ``size < 0``.
        """

    @abstractmethod
    def invalidate(self, key: Hashable) -> bool:
        """Remove ``key`` if resident (a write or delete elsewhere made it stale).

        Returns:
            True if the key was resident (expired or not).
        """

    @abstractmethod
    def keys(self) -> Iterator[Hashable]:
        """Resident keys, from the next eviction candidate's end of the queue to the newest.

        For LRU this is least to most recently used; for FIFO and SIEVE, oldest to
        newest insertion (SIEVE's hand may start in the middle).
        """

    @abstractmethod
    def __contains__(self, key: object) -> bool:
        """True if ``key`` is resident; ignores expiry, touches no counter or order."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of resident entries (expired ones included until removed)."""

    def access(self, key: Hashable, size: int = 1, now: float = 0.0) -> bool:
        """One request of a trace replay: :meth:`lookup`, and :meth:`admit` on a miss.

        Args:
            key: any hashable key.
            size: the object's size in bytes (used on a miss, in byte mode).
            now: the current time in seconds.

        Returns:
            True on a hit.
        """
        if self.lookup(key, now):
            return True
        self.admit(key, size, now)
        return False


class _DictPolicy(CachePolicy):
    """Shared machinery of the OrderedDict-based policies (LRU, FIFO).

    ``_data`` maps key -> expiry time (``inf`` without a TTL) in queue order, the
    eviction end first; ``_costs`` maps key -> cost and exists only in byte mode (in item
    mode every entry costs 1). One dict entry per resident key keeps large simulated
    caches small.
    """

    _promote_on_hit: ClassVar[bool] = False

    def __init__(
        self,
        *,
        capacity_items: int | float | None = None,
        capacity_bytes: int | float | None = None,
        ttl_s: int | float | None = None,
    ) -> None:
        super().__init__(capacity_items=capacity_items, capacity_bytes=capacity_bytes, ttl_s=ttl_s)
        self._data: OrderedDict[Hashable, float] = OrderedDict()
        self._costs: dict[Hashable, int] | None = {} if self._in_bytes else None
        self._life = self._ttl_s if self._ttl_s is not None else math.inf

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> Iterator[Hashable]:
        return iter(list(self._data))

    def _admit_resident(self, key: Hashable, at: float) -> None:
        self._data[key] = at + self._life  # newest position; the room was the virtual one's
        if self._costs is not None:
            self._costs[key] = self._unit
        self._used += self._unit

    def _drop(self, key: Hashable) -> None:
        del self._data[key]
        costs = self._costs
        self._used -= costs.pop(key) if costs is not None else 1

    def invalidate(self, key: Hashable) -> bool:
        if key in self._data:
            self._drop(key)
            if self._virtual:
                self._tomb.add(key)
            return True
        if self._virtual:
            return self._warm_invalidate(key)
        return False

    def lookup(self, key: Hashable, now: float = 0.0) -> bool:
        data = self._data
        expire = data.get(key)
        if expire is not None:
            if expire > now:
                if self._promote_on_hit:
                    data.move_to_end(key)
                self._hits += 1
                return True
            self._drop(key)
            self._expirations += 1
            if self._virtual:
                self._tomb.add(key)
            self._misses += 1
            return False
        self._misses += 1
        if self._virtual:
            return self._warm_hit(key, now)
        return False

    def admit(self, key: Hashable, size: int = 1, now: float = 0.0) -> list[Hashable]:
        if size < 0:
            self._cost(key, size)  # raises, naming the key
        cost = size if self._in_bytes else 1
        data = self._data
        if key in data:
            self._drop(key)
        capacity = self._capacity
        if self._virtual:
            need = self._used + cost + self._virtual - capacity
            if need > 0:  # evict virtual residents first
                self._virtual = self._virtual - need if self._virtual > need else 0
        if cost > capacity:
            return []
        evicted: list[Hashable] = []
        used = self._used + cost
        if used > capacity:
            costs = self._costs
            while used > capacity:
                victim, _ = data.popitem(last=False)
                used -= costs.pop(victim) if costs is not None else 1
                evicted.append(victim)
            self._evictions += len(evicted)
        data[key] = now + self._life
        if self._costs is not None:
            self._costs[key] = cost
        self._used = used
        return evicted

    def access(self, key: Hashable, size: int = 1, now: float = 0.0) -> bool:
        # Inlined lookup (+ admit in item mode): this is the hot path of every trace
        # replay and of the simulator.
        data = self._data
        expire = data.get(key)
        if expire is not None:
            if expire > now:
                if self._promote_on_hit:
                    data.move_to_end(key)
                self._hits += 1
                return True
            self._drop(key)
            self._expirations += 1
        self._misses += 1
        if self._virtual:
            if self._warm_hit(key, now):
                return True
            self.admit(key, size, now)
            return False
        if self._costs is None and size >= 0:
            # every object costs 1 and capacity >= 1: at most one victim
            if len(data) >= self._capacity:
                data.popitem(last=False)
                self._evictions += 1
            else:
                self._used += 1
            data[key] = now + self._life
        else:
            self.admit(key, size, now)
        return False


class LRU(_DictPolicy):
    """Least recently used: a hit makes the entry the most recently used; the least
    recently used entry is evicted first.

    Backed by an ``OrderedDict`` (``move_to_end`` on a hit, ``popitem(last=False)`` to
    evict), the fastest pure-Python LRU. See :class:`CachePolicy` for the arguments.

    Examples:
        >>> lru = LRU(capacity_bytes=100)
        >>> lru.admit("a", size=60), lru.admit("b", size=40), lru.admit("c", size=10)
        ([], [], ['a'])
        >>> lru.used
        50
    """

    name = "lru"
    _promote_on_hit = True


class FIFO(_DictPolicy):
    """First in, first out: hits change nothing; the oldest admitted entry is evicted.

    See :class:`CachePolicy` for the arguments.

    Examples:
        >>> fifo = FIFO(capacity_items=2)
        >>> [fifo.access(k) for k in ["a", "b", "a", "c", "a"]]
        [False, False, True, False, False]
    """

    name = "fifo"
    _promote_on_hit = False


class _Node:
    """One SIEVE entry in the doubly linked queue (``newer`` points towards the head)."""

    __slots__ = ("cost", "expire_at", "key", "newer", "older", "visited")

    def __init__(self, key: Hashable, cost: int, expire_at: float) -> None:
        self.key = key
        self.cost = cost
        self.expire_at = expire_at
        self.visited = False
        self.newer: _Node | None = None
        self.older: _Node | None = None


class Sieve(CachePolicy):
    """SIEVE (Zhang et al., NSDI'24): a FIFO queue, a visited bit and a moving hand.

    New objects enter at the head; a hit only sets the object's visited bit. To evict,
    the hand walks from where it stopped last (initially the tail, the oldest end)
    towards the head, clearing visited bits, and evicts the first unvisited object; it
    wraps from the head back to the tail. Survivors keep their place in the queue, which
    is what distinguishes SIEVE from CLOCK. See :class:`CachePolicy` for the arguments.

    Examples:
        >>> sieve = Sieve(capacity_items=2)
        >>> [sieve.access(k) for k in ["a", "b", "a", "c", "a", "b"]]
        [False, False, True, False, True, False]
    """

    name = "sieve"

    def __init__(
        self,
        *,
        capacity_items: int | float | None = None,
        capacity_bytes: int | float | None = None,
        ttl_s: int | float | None = None,
    ) -> None:
        super().__init__(capacity_items=capacity_items, capacity_bytes=capacity_bytes, ttl_s=ttl_s)
        self._nodes: dict[Hashable, _Node] = {}
        self._head: _Node | None = None  # newest
        self._tail: _Node | None = None  # oldest
        self._hand: _Node | None = None

    def __contains__(self, key: object) -> bool:
        return key in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def keys(self) -> Iterator[Hashable]:
        out = []
        node = self._tail
        while node is not None:
            out.append(node.key)
            node = node.newer
        return iter(out)

    def _unlink(self, node: _Node) -> None:
        if node is self._hand:
            self._hand = node.newer
        if node.newer is not None:
            node.newer.older = node.older
        else:
            self._head = node.older
        if node.older is not None:
            node.older.newer = node.newer
        else:
            self._tail = node.newer
        del self._nodes[node.key]
        self._used -= node.cost

    def _evict_one(self) -> Hashable:
        node = self._hand if self._hand is not None else self._tail
        assert node is not None, "eviction from an empty cache"
        while node.visited:
            node.visited = False
            node = node.newer if node.newer is not None else self._tail
            assert node is not None
        self._hand = node.newer
        self._unlink(node)
        return node.key

    def invalidate(self, key: Hashable) -> bool:
        node = self._nodes.get(key)
        if node is None:
            return self._warm_invalidate(key) if self._virtual else False
        self._unlink(node)
        if self._virtual:
            self._tomb.add(key)
        return True

    def lookup(self, key: Hashable, now: float = 0.0) -> bool:
        node = self._nodes.get(key)
        if node is not None:
            if self._ttl_s is None or node.expire_at > now:
                node.visited = True
                self._hits += 1
                return True
            self._unlink(node)
            self._expirations += 1
            if self._virtual:
                self._tomb.add(key)
            self._misses += 1
            return False
        self._misses += 1
        if self._virtual:
            return self._warm_hit(key, now)
        return False

    def admit(self, key: Hashable, size: int = 1, now: float = 0.0) -> list[Hashable]:
        cost = self._cost(key, size)
        old = self._nodes.get(key)
        if old is not None:
            self._unlink(old)
        if self._virtual:
            self._make_room(cost)
        if cost > self._capacity:
            return []
        evicted: list[Hashable] = []
        while self._used + cost > self._capacity:
            evicted.append(self._evict_one())
        self._evictions += len(evicted)
        expire_at = now + self._ttl_s if self._ttl_s is not None else float("inf")
        node = _Node(key, cost, expire_at)
        node.older = self._head
        if self._head is not None:
            self._head.newer = node
        else:
            self._tail = node
        self._head = node
        self._nodes[key] = node
        self._used += cost
        return evicted


#: The explicit registry of policies, by the name a spec uses (``cache: {policy: lru}``).
POLICIES: dict[str, type[CachePolicy]] = {"lru": LRU, "fifo": FIFO, "sieve": Sieve}


def make_policy(name: str, **kwargs: Any) -> CachePolicy:
    """Build a cache policy by its registry name.

    Args:
        name: a key of :data:`POLICIES` (case-insensitive): ``lru``, ``fifo``, ``sieve``.
        **kwargs: passed to the policy (``capacity_items`` or ``capacity_bytes``,
            optionally ``ttl_s``).

    Returns:
        A new, empty cache.

    Raises:
        ConfigError: unknown name (with the closest known name), or bad capacity/TTL.

    Examples:
        >>> make_policy("sieve", capacity_items=1000)
        Sieve(capacity_items=1000, used=0, len=0)
    """
    key = str(name).strip().lower()
    try:
        cls = POLICIES[key]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise ConfigError(
            f"cache policy {name!r} is not known{did_you_mean(key, POLICIES)} (known: {known})."
        ) from None
    return cls(**kwargs)
