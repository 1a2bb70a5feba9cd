"""The running system's caches: single-flight loads, invalidation on write, TTL expiry
with injected time, keyed hit accounting L1 -> L2 -> regional, residency, spec wiring."""

from __future__ import annotations

import threading
import time

import pytest

from geoshard.errors import BackendError, ConfigError, InputError, ResidencyError
from geoshard.keys import DataKey, UserKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import load_spec
from geoshard.storage.cache import LRU, CacheHierarchy, make_policy
from geoshard.storage.caches import (
    LocalCache,
    ReadThroughCache,
    StoreCache,
    build_cache_levels,
)
from geoshard.storage.memory import MemoryHotStore


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def spec(repo_root):
    return load_spec(repo_root / "examples" / "local.yaml")


@pytest.fixture(scope="module")
def policy(spec) -> ResidencyPolicy:
    return ResidencyPolicy.from_spec(spec)


def item(name: str) -> DataKey:
    return DataKey("item_catalog", name)


def lru(
    n: int, ttl_s: float | None = None, clock: Clock | None = None, name: str = "l1"
) -> LocalCache:
    return LocalCache(
        name,
        make_policy("lru", capacity_items=n, ttl_s=ttl_s),
        region="us-east",
        residency=None,
        clock=clock or Clock(),
    )


def test_n_concurrent_misses_on_one_key_cause_exactly_one_load() -> None:
    n_threads = 16
    started = threading.Barrier(n_threads)
    release = threading.Event()
    calls: list[DataKey] = []

    def slow_loader(key: DataKey) -> bytes:
        calls.append(key)
        assert release.wait(5)
        return b"loaded"

    reader = ReadThroughCache([lru(10)], loader=slow_loader)
    results: list[bytes | None] = []

    def worker() -> None:
        started.wait()
        results.append(reader.get(item("hot")))

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while reader.stats.lookups[0] < n_threads and time.monotonic() < deadline:
        time.sleep(0.005)  # every thread has missed L1 and joined the flight
    time.sleep(0.05)
    release.set()
    for t in threads:
        t.join(5)
    assert calls == [item("hot")]
    assert results == [b"loaded"] * n_threads
    assert reader.loads == 1
    assert reader.get(item("hot")) == b"loaded" and reader.loads == 1  # now cached


def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    release = threading.Event()
    attempts = [0]

    def broken(key: DataKey) -> bytes:
        attempts[0] += 1
        release.wait(5)
        raise BackendError("redis 10.0.0.1:6379: GET failed")

    reader = ReadThroughCache([lru(10)], loader=broken)
    errors: list[str] = []

    def worker() -> None:
        try:
            reader.get(item("k"))
        except BackendError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    release.set()
    for t in threads:
        t.join(5)
    assert errors == ["redis 10.0.0.1:6379: GET failed"] * 4
    assert attempts[0] == 1
    with pytest.raises(BackendError, match=r"GET failed"):
        reader.get(item("k"))
    assert attempts[0] == 2


def test_a_waiter_gives_up_after_the_load_timeout() -> None:
    release = threading.Event()
    reader = ReadThroughCache(
        [lru(10)], loader=lambda k: (release.wait(5), b"v")[1], load_timeout_s=0.05
    )
    leader = threading.Thread(target=reader.get, args=(item("k"),))
    leader.start()
    time.sleep(0.05)
    try:
        with pytest.raises(
            BackendError,
            match=r"waited 0\.05 s for another request's load "
            r"of item_catalog:k",
        ):
            reader.get(item("k"))
    finally:
        release.set()
        leader.join(5)


def test_write_through_updates_the_tier_then_invalidates_every_level() -> None:
    tier: dict[DataKey, bytes] = {item("k"): b"v1"}
    l2_store = MemoryHotStore("us-east", None)
    l1, l2 = lru(10), StoreCache("l2", l2_store, ttl_s=300)
    reader = ReadThroughCache([l1, l2], loader=tier.get, writer=tier.__setitem__)
    assert reader.get(item("k")) == b"v1"
    assert l1.get(item("k")) == b"v1" and l2_store.get(item("k")) == b"v1"

    reader.write_through(item("k"), b"v2")
    assert tier[item("k")] == b"v2"
    assert l1.get(item("k")) is None and l2_store.get(item("k")) is None
    assert reader.get(item("k")) == b"v2"
    assert reader.loads == 2


def test_a_write_during_a_load_keeps_the_stale_value_out_of_the_caches() -> None:
    tier: dict[DataKey, bytes] = {item("k"): b"old"}
    in_load, release = threading.Event(), threading.Event()

    def loader(key: DataKey) -> bytes | None:
        value = tier.get(key)
        in_load.set()
        release.wait(5)
        return value

    l1 = lru(10)
    reader = ReadThroughCache([l1], loader=loader, writer=tier.__setitem__)
    t = threading.Thread(target=reader.get, args=(item("k"),))
    t.start()
    assert in_load.wait(5)
    reader.write_through(item("k"), b"new")
    release.set()
    t.join(5)
    assert l1.get(item("k")) is None
    release.clear()
    threading.Timer(0.01, release.set).start()
    assert reader.get(item("k")) == b"new"


class _WriteDuringGet(LocalCache):
    """An L2 whose lookup lets a write run after it found the old value, before L1 is filled."""

    reader: ReadThroughCache | None = None
    fired = False

    def get(self, key: DataKey) -> bytes | None:
        value = super().get(key)
        if value is not None and self.reader is not None and not self.fired:
            self.fired = True
            self.reader.write_through(key, b"new")
        return value


@pytest.mark.parametrize("write_at", ["between the L2 hit and the L1 fill", "none"])
def test_a_write_after_an_l2_hit_keeps_the_old_value_out_of_l1(write_at: str) -> None:
    tier: dict[DataKey, bytes] = {item("k"): b"old"}
    l1 = lru(10)
    l2 = _WriteDuringGet(
        "l2", make_policy("lru", capacity_items=10), region="us-east", residency=None, clock=Clock()
    )
    reader = ReadThroughCache([l1, l2], loader=tier.get, writer=tier.__setitem__)
    l2.put(item("k"), b"old")
    if write_at != "none":
        l2.reader = reader
    assert reader.get(item("k")) == b"old"  # the read began before the write: either is fair
    if write_at == "none":
        assert l1.get(item("k")) == b"old"  # an undisturbed L2 hit fills L1
    else:
        assert l1.get(item("k")) is None and l2.get(item("k")) is None
        assert reader.get(item("k")) == b"new"  # and every later read sees the write


class _SlowInvalidate(LocalCache):
    """An L2 whose invalidation blocks until released, counting the callers inside it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.inside = threading.Semaphore(0)

    def invalidate(self, key: DataKey) -> bool:
        self.inside.release()
        assert self.release.wait(5)
        return super().invalidate(key)


def test_a_read_during_two_overlapping_invalidations_keeps_its_copy_out_of_l1() -> None:
    l1 = lru(10)
    l2 = _SlowInvalidate(
        "l2", make_policy("lru", capacity_items=10), region="us-east", residency=None, clock=Clock()
    )
    reader = ReadThroughCache([l1, l2], loader=lambda k: b"new")
    l2.put(item("k"), b"old")
    writers = [threading.Thread(target=reader.invalidate, args=(item("k"),)) for _ in range(2)]
    for w in writers:
        w.start()
    try:
        for _ in writers:  # both writers have cleared L1 and wait inside L2's invalidation
            assert l2.inside.acquire(timeout=5)
        assert reader.get(item("k")) == b"old"  # L2 still holds it: a read may return it
        assert l1.get(item("k")) is None  # but must not leave it in L1
    finally:
        l2.release.set()
        for w in writers:
            w.join(5)
    assert reader.get(item("k")) == b"new"


def test_write_through_without_a_writer_is_a_config_error() -> None:
    reader = ReadThroughCache([lru(1)], loader=lambda k: None)
    with pytest.raises(ConfigError, match=r"has no writer; pass writer="):
        reader.write_through(item("k"), b"v")


def test_ttl_expiry_follows_the_injected_clock() -> None:
    clock = Clock()
    tier = {item("k"): b"v"}
    reader = ReadThroughCache([lru(10, ttl_s=30, clock=clock)], loader=tier.get)
    reader.get(item("k"))
    clock.now = 29.9
    reader.get(item("k"))
    assert reader.loads == 1
    clock.now = 30.0
    reader.get(item("k"))
    assert reader.loads == 2


def test_store_level_ttl_uses_the_store_clock() -> None:
    clock = Clock()
    store = MemoryHotStore("us-east", None, clock=clock)
    level = StoreCache("l2", store, ttl_s=300)
    level.put(item("k"), b"v")
    assert store.ttl(item("k")) == pytest.approx(300)
    clock.now = 300
    assert level.get(item("k")) is None


def test_keyed_hit_accounting_across_l1_l2_regional() -> None:
    l1, l2, l3 = lru(1, name="l1"), lru(2, name="l2"), lru(10, name="regional")
    tier = {item(k): k.encode() for k in "abc"}
    reader = ReadThroughCache([l1, l2, l3], loader=tier.get)
    trace = ["a", "b", "a", "c", "b", "a", "a"]
    assert [reader.get(item(k)) for k in trace] == [k.encode() for k in trace]
    # a:load b:load a:L2 c:load(L2 evicts b) b:L3(L2 evicts a) a:L3 a:L1
    s = reader.stats
    assert s.requests == 7
    assert s.lookups == (7, 6, 5)
    assert s.hits == (1, 1, 2)
    assert reader.loads == 3 and s.origin_requests == 3
    # The pure hierarchy the simulator uses decides exactly the same on the same keys.
    oracle = CacheHierarchy([LRU(capacity_items=1), LRU(capacity_items=2), LRU(capacity_items=10)])
    for k in trace:
        oracle.access(item(k))
    assert oracle.stats == s


def test_personal_data_is_not_cached_outside_its_jurisdiction(policy: ResidencyPolicy) -> None:
    eu_user = DataKey("user_features", UserKey("eu", 42))
    l1 = LocalCache("l1", make_policy("lru", capacity_items=10), region="us-east", residency=policy)
    l2_store = MemoryHotStore("us-east", policy)
    reader = ReadThroughCache(
        [l1, StoreCache("l2", l2_store, ttl_s=60)], loader=lambda k: b"secret"
    )
    # The shared walk's rule: a fill that residency forbids is skipped and counted as a
    # refusal (the simulator does the same); nothing is cached in us-east.
    assert reader.get(eu_user) == b"secret"
    assert reader.refusals == [1, 1]
    assert len(l1) == 0 and len(l2_store) == 0
    with pytest.raises(ResidencyError, match=r"eu user_features may not be stored in 'us-east'"):
        l1.put(eu_user, b"secret")
    assert len(l1) == 0
    with pytest.raises(ResidencyError, match=r"may not be stored in 'us-east'"):
        StoreCache("l2", l2_store, ttl_s=60).put(eu_user, b"secret")
    assert len(l2_store) == 0
    eu_l1 = LocalCache(
        "l1", make_policy("lru", capacity_items=10), region="eu-west", residency=policy
    )
    eu_l1.put(eu_user, b"ok")
    assert eu_l1.get(eu_user) == b"ok"


def test_local_cache_refuses_bad_payloads_and_respects_byte_capacity() -> None:
    cache = LocalCache(
        "l1", make_policy("lru", capacity_bytes=10), region="us-east", residency=None
    )
    with pytest.raises(InputError, match=r"value of type int is not bytes"):
        cache.put(item("k"), 5)  # type: ignore[arg-type]
    cache.put(item("a"), b"123456")
    cache.put(item("b"), b"12345")  # evicts a
    cache.put(item("huge"), b"x" * 11)  # larger than the cache: not admitted
    assert (cache.get(item("a")), cache.get(item("b")), cache.get(item("huge"))) == (
        None,
        b"12345",
        None,
    )
    assert len(cache) == 1


def test_levels_are_built_from_the_spec(spec, policy: ResidencyPolicy) -> None:
    l2_store = MemoryHotStore("eu-west", policy)
    levels = build_cache_levels(
        spec.caches, region="eu-west", residency=policy, stores={"l2": l2_store}
    )
    assert [lv.name for lv in levels] == ["l1", "l2", "regional"]
    l1, l2, regional = levels
    assert isinstance(l1, LocalCache) and l1.policy.capacity == 2000 and l1.policy.ttl_s == 30
    assert isinstance(l2, StoreCache) and l2.store is l2_store and l2.ttl_s == 300
    assert isinstance(regional, LocalCache) and type(regional.policy).__name__ == "Sieve"
    assert regional.policy.capacity == 50000
    with pytest.raises(ConfigError, match=r"the l1 cache is in-process"):
        build_cache_levels(spec.caches, region="eu-west", residency=policy, stores={"l1": l2_store})
    only_l1 = spec.caches.model_copy(update={"l2": None, "regional": None})
    with pytest.raises(
        ConfigError,
        match=r"stores given for cache levels the spec does not "
        r"configure: l2",
    ):
        build_cache_levels(only_l1, region="eu-west", residency=policy, stores={"l2": l2_store})


def test_bad_reader_configs() -> None:
    with pytest.raises(ConfigError, match=r"needs at least one level"):
        ReadThroughCache([], loader=lambda k: None)
    level = lru(1)
    with pytest.raises(ConfigError, match=r"appears twice"):
        ReadThroughCache([level, level], loader=lambda k: None)
