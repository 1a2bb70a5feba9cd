"""The cache policies as a spec: configuration, TTL, invalidation, byte capacity and
properties checked against naive reference implementations."""

from __future__ import annotations

from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoshard.errors import ConfigError, InputError
from geoshard.storage.cache import FIFO, LRU, POLICIES, CachePolicy, Sieve, make_policy

ALL = [LRU, FIFO, Sieve]
ids = [c.name for c in ALL]


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize("policy", ALL, ids=ids)
def test_exactly_one_capacity(policy: type[CachePolicy]) -> None:
    with pytest.raises(
        ConfigError,
        match="exactly one of capacity_items or capacity_bytes, "
        r"not both \(got capacity_items=10, capacity_bytes=100\)",
    ):
        policy(capacity_items=10, capacity_bytes=100)
    with pytest.raises(ConfigError, match="got neither"):
        policy()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capacity_items": 0}, r"capacity_items\(=0\) must be > 0\."),
        ({"capacity_bytes": -5}, r"capacity_bytes\(=-5\) must be > 0\."),
        ({"capacity_items": 2.5}, r"capacity_items\(=2\.5\) must be an integer > 0\."),
        ({"capacity_items": True}, r"capacity_items\(=True\) must be an integer > 0\."),
        ({"capacity_items": 3, "ttl_s": 0}, r"ttl_s\(=0\) must be > 0, or None for no expiry\."),
        ({"capacity_items": 3, "ttl_s": float("nan")}, r"ttl_s\(=nan\) must be > 0"),
    ],
)
def test_bad_capacity_or_ttl(kwargs: dict[str, object], message: str) -> None:
    for policy in ALL:
        with pytest.raises(ConfigError, match=message):
            policy(**kwargs)  # type: ignore[arg-type]


def test_registry_and_make_policy() -> None:
    assert {"lru": LRU, "fifo": FIFO, "sieve": Sieve} == POLICIES
    cache = make_policy("SIEVE", capacity_bytes=4096, ttl_s=60)
    assert isinstance(cache, Sieve) and cache.in_bytes and cache.capacity == 4096
    assert cache.ttl_s == 60.0
    with pytest.raises(
        ConfigError,
        match=r"cache policy 'lur' is not known; did you mean "
        r"'lru'\? \(known: fifo, lru, sieve\)",
    ):
        make_policy("lur", capacity_items=10)
    with pytest.raises(ConfigError, match=r"cache policy 'arc' is not known \(known: "):
        make_policy("arc", capacity_items=10)
    with pytest.raises(ConfigError, match="got neither"):
        make_policy("lru")


@pytest.mark.parametrize("policy", ALL, ids=ids)
def test_negative_size_is_an_input_error(policy: type[CachePolicy]) -> None:
    cache = policy(capacity_bytes=10)
    with pytest.raises(InputError, match=r"size\(=-1\) of key 'k' must be >= 0"):
        cache.admit("k", size=-1)
    with pytest.raises(InputError, match=r"size\(=-1\)"):
        cache.access("k", size=-1)
    assert len(cache) == 0 and cache.used == 0


# -- eviction order --------------------------------------------------------------------


def test_lru_hit_moves_to_mru() -> None:
    cache = LRU(capacity_items=3)
    for key in "abc":
        cache.access(key)
    assert cache.lookup("a")
    assert cache.admit("d") == ["b"]
    assert list(cache.keys()) == ["c", "a", "d"]


def test_fifo_ignores_hits() -> None:
    cache = FIFO(capacity_items=3)
    for key in "abc":
        cache.access(key)
    assert cache.lookup("a")
    assert cache.admit("d") == ["a"]


def test_sieve_hand_keeps_visited_objects_in_place() -> None:
    cache = Sieve(capacity_items=3)
    for key in "abc":
        cache.access(key)
    assert cache.lookup("a") and cache.lookup("b")
    # hand starts at the tail: clears a, clears b, evicts c (unvisited)
    assert cache.admit("d") == ["c"]
    assert list(cache.keys()) == ["a", "b", "d"]  # survivors did not move (unlike CLOCK)
    # c was the head, so the hand wraps to the tail; a was cleared on the first sweep
    assert cache.admit("e") == ["a"]
    # the hand continues from where it stopped (b, cleared too), new objects are behind it
    assert cache.admit("f") == ["b"]
    assert list(cache.keys()) == ["d", "e", "f"]


# -- byte capacity ---------------------------------------------------------------------


@pytest.mark.parametrize("policy", ALL, ids=ids)
def test_object_larger_than_the_cache_is_not_admitted(policy: type[CachePolicy]) -> None:
    cache = policy(capacity_bytes=100)
    cache.access("small", size=40)
    assert cache.access("huge", size=101) is False
    assert "huge" not in cache and "small" in cache and cache.used == 40
    assert cache.admit("huge", size=101) == []
    assert cache.stats.evictions == 0
    # a resident key re-admitted too large is dropped: its cached copy is stale
    assert cache.admit("small", size=500) == [] and "small" not in cache and cache.used == 0


@pytest.mark.parametrize("policy", ALL, ids=ids)
def test_exact_fit_evicts_nothing_and_one_byte_more_evicts(policy: type[CachePolicy]) -> None:
    cache = policy(capacity_bytes=100)
    assert cache.admit("a", size=60) == []
    assert cache.admit("b", size=40) == []
    assert cache.used == 100 == cache.capacity
    assert cache.admit("c", size=100) == ["a", "b"]
    assert cache.used == 100 and list(cache.keys()) == ["c"]
    assert cache.admit("d", size=1) == ["c"]
    assert cache.admit("e", size=0) == [] and cache.used == 1 and len(cache) == 2


def test_item_mode_ignores_sizes() -> None:
    cache = LRU(capacity_items=2)
    cache.access("a", size=10**9)
    cache.access("b", size=10**9)
    assert cache.used == 2 == len(cache) and not cache.in_bytes


# -- TTL and invalidation --------------------------------------------------------------


@pytest.mark.parametrize("policy", ALL, ids=ids)
def test_ttl_expiry_is_a_miss_and_removes_the_entry(policy: type[CachePolicy]) -> None:
    cache = policy(capacity_items=10, ttl_s=30.0)
    assert cache.access("k", now=100.0) is False
    assert cache.lookup("k", now=129.999) is True
    assert "k" in cache  # membership ignores expiry and touches nothing
    assert cache.lookup("k", now=130.0) is False  # expires at admission time + ttl_s
    assert "k" not in cache and len(cache) == 0 and cache.used == 0
    assert cache.stats.expirations == 1 and cache.stats.hits == 1 and cache.stats.misses == 2
    # a hit does not extend the TTL (set at insertion, like SET ... EX)
    cache.access("j", now=0.0)
    assert cache.access("j", now=20.0) is True
    assert cache.access("j", now=35.0) is False  # expired, re-admitted until 65
    assert cache.lookup("j", now=64.0) is True


def test_without_ttl_nothing_expires() -> None:
    cache = LRU(capacity_items=1)
    cache.access("k", now=0.0)
    assert cache.lookup("k", now=1e12)


@pytest.mark.parametrize("policy", ALL, ids=ids)
def test_invalidate(policy: type[CachePolicy]) -> None:
    cache = policy(capacity_bytes=100, ttl_s=5.0)
    cache.access("a", size=30)
    cache.access("b", size=30)
    assert cache.invalidate("a") is True
    assert cache.invalidate("a") is False
    assert "a" not in cache and cache.used == 30 and len(cache) == 1
    assert cache.lookup("a") is False
    assert cache.stats.evictions == 0
    assert cache.invalidate("b") and cache.used == 0 and list(cache.keys()) == []
    cache.access("c", size=100)  # the emptied queue still works
    assert list(cache.keys()) == ["c"]


@pytest.mark.parametrize("policy", ALL, ids=ids)
def test_stats_and_reset(policy: type[CachePolicy]) -> None:
    cache = policy(capacity_items=2)
    for key in "abacab":
        cache.access(key)
    s = cache.stats
    assert s.requests == 6 and s.hits + s.misses == 6
    assert s.hit_ratio + s.miss_ratio == pytest.approx(1.0)
    assert s.evictions == s.misses - 2
    cache.reset_stats()
    assert cache.stats.requests == 0 and cache.stats.hit_ratio == 0.0 and len(cache) == 2


# -- properties against naive references -----------------------------------------------


class NaiveCache:
    """Lists and linear scans: slow, obviously right. ``kind`` is lru, fifo or sieve."""

    def __init__(self, kind: str, capacity: int, in_bytes: bool, ttl_s: float | None) -> None:
        self.kind, self.capacity, self.in_bytes, self.ttl_s = kind, capacity, in_bytes, ttl_s
        self.queue: list[list[object]] = []  # [key, cost, expire_at, visited], oldest first
        self.hand = 0
        self.hits = self.misses = self.evictions = self.expirations = 0

    def _find(self, key: Hashable) -> int:
        return next((i for i, e in enumerate(self.queue) if e[0] == key), -1)

    def _remove_at(self, i: int) -> None:
        del self.queue[i]
        if i < self.hand:
            self.hand -= 1
        if self.hand >= len(self.queue):
            self.hand = 0

    @property
    def used(self) -> int:
        return sum(int(e[1]) for e in self.queue)  # type: ignore[call-overload]

    def lookup(self, key: Hashable, now: float) -> bool:
        i = self._find(key)
        if i >= 0:
            if self.ttl_s is None or float(self.queue[i][2]) > now:  # type: ignore[arg-type]
                self.hits += 1
                if self.kind == "lru":
                    self.queue.append(self.queue.pop(i))
                elif self.kind == "sieve":
                    self.queue[i][3] = True
                return True
            self._remove_at(i)
            self.expirations += 1
        self.misses += 1
        return False

    def admit(self, key: Hashable, size: int, now: float) -> list[Hashable]:
        cost = size if self.in_bytes else 1
        i = self._find(key)
        if i >= 0:
            self._remove_at(i)
        if cost > self.capacity:
            return []
        evicted = []
        while self.used + cost > self.capacity:
            if self.kind == "sieve":
                while self.queue[self.hand][3]:
                    self.queue[self.hand][3] = False
                    self.hand = (self.hand + 1) % len(self.queue)
                j = self.hand
            else:
                j = 0
            evicted.append(self.queue[j][0])
            self._remove_at(j)
        self.evictions += len(evicted)
        expire_at = now + self.ttl_s if self.ttl_s is not None else float("inf")
        self.queue.append([key, cost, expire_at, False])
        return evicted

    def invalidate(self, key: Hashable) -> bool:
        i = self._find(key)
        if i >= 0:
            self._remove_at(i)
        return i >= 0


operations = st.lists(
    st.tuples(
        st.sampled_from(["access", "access", "access", "lookup", "admit", "invalidate"]),
        st.integers(0, 15),  # key
        st.integers(0, 40),  # size
        st.floats(0, 1),  # time step
    ),
    min_size=40,
    max_size=150,
)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(sorted(POLICIES)),
    slots=st.integers(1, 12),  # small against 16 keys, so evictions are common
    in_bytes=st.booleans(),
    ttl_s=st.one_of(st.none(), st.none(), st.floats(0.5, 30)),
    ops=operations,
)
def test_policies_equal_naive_reference_and_respect_capacity(
    kind: str,
    slots: int,
    in_bytes: bool,
    ttl_s: float | None,
    ops: list[tuple[str, int, int, float]],
) -> None:
    capacity = slots * 10 if in_bytes else slots
    unit = "capacity_bytes" if in_bytes else "capacity_items"
    cache = make_policy(kind, **{unit: capacity}, ttl_s=ttl_s)
    ref = NaiveCache(kind, capacity, in_bytes, ttl_s)
    now = 0.0
    for op, key, size, step in ops:
        now += step
        if op == "access":
            hit = ref.lookup(key, now)
            if not hit:
                ref.admit(key, size, now)
            assert cache.access(key, size, now) == hit
        elif op == "lookup":
            assert cache.lookup(key, now) == ref.lookup(key, now)
        elif op == "admit":
            assert cache.admit(key, size, now) == ref.admit(key, size, now)
        else:
            assert cache.invalidate(key) == ref.invalidate(key)
        assert cache.used <= capacity
        assert cache.used == ref.used
        assert len(cache) == len(ref.queue)
        if not in_bytes:
            assert cache.used == len(cache)
        assert list(cache.keys()) == [e[0] for e in ref.queue]
    s = cache.stats
    assert (s.hits, s.misses, s.evictions, s.expirations) == (
        ref.hits,
        ref.misses,
        ref.evictions,
        ref.expirations,
    )
