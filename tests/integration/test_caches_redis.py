"""The L2 cache on a real redis-server: built from the spec, shared by processes' L1s.

``build_cache_levels`` with ``stores={"l2": RedisHotStore(...)}`` is what a regional API
runs: L1 in-process, L2 in the region's Redis. These tests talk to a real
``redis-server`` on a free loopback port (the session fixture).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from geoshard.cluster.local.redis_procs import RedisServer
from geoshard.errors import ResidencyError
from geoshard.keys import DataKey, UserKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import Spec, load_spec
from geoshard.storage.caches import ReadThroughCache, StoreCache, build_cache_levels
from geoshard.storage.redis_store import RedisHotStore, RedisHotStoreConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def spec(repo_root: Path) -> Spec:
    return load_spec(repo_root / "examples" / "local.yaml")


@pytest.fixture(scope="module")
def policy(spec: Spec) -> ResidencyPolicy:
    return ResidencyPolicy.from_spec(spec)


@pytest.fixture
def namespace() -> str:
    return f"c{uuid.uuid4().hex[:8]}"


@pytest.fixture
def l2(
    redis_server: RedisServer, policy: ResidencyPolicy, namespace: str
) -> Iterator[Callable[[str], RedisHotStore]]:
    """``l2(region)``: a region's L2 store on the session redis-server, closed even on failure."""
    made: list[RedisHotStore] = []

    def make(region: str) -> RedisHotStore:
        url = redis_server.url
        made.append(
            RedisHotStore(
                RedisHotStoreConfig(url=url, namespace=namespace), region=region, residency=policy
            )
        )
        return made[-1]

    try:
        yield make
    finally:
        for store in made:
            store.close()


def _raw_keys(redis_server: RedisServer, namespace: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_server.url)
    try:
        return sorted(client.scan_iter(match=f"{namespace}*"))
    finally:
        client.close()


def _reader(
    spec: Spec,
    store: RedisHotStore,
    tier: dict[DataKey, bytes],
    loads: list[DataKey],
    region: str = "eu-west",
) -> ReadThroughCache:
    levels = build_cache_levels(
        spec.caches, region=region, residency=store.residency, stores={"l2": store}
    )

    def loader(key: DataKey) -> bytes | None:
        loads.append(key)
        return tier.get(key)

    return ReadThroughCache(levels, loader=loader, writer=tier.__setitem__)


def test_l2_in_redis_is_filled_with_the_spec_ttl_and_serves_another_l1(
    redis_server: RedisServer, spec: Spec, l2: Callable[[str], RedisHotStore], namespace: str
) -> None:
    store = l2("eu-west")
    key = DataKey("user_features", UserKey("eu", 42))
    tier = {key: b"features-v1"}
    loads: list[DataKey] = []
    a = _reader(spec, store, tier, loads)
    assert [type(level).__name__ for level in a.levels][1] == "StoreCache"
    assert a.get(key) == b"features-v1" and a.get(key) == b"features-v1"
    assert loads == [key]  # the second read is an L1 hit
    # the value is in Redis, under the hot-tier layout, with the l2 TTL of the spec
    assert len(_raw_keys(redis_server, namespace)) == 1
    ttl = store.ttl(key)
    l2_ttl = spec.caches.l2.ttl_s if spec.caches.l2 is not None else None
    assert ttl is not None and l2_ttl is not None and 0 < ttl <= l2_ttl
    # a second API process has its own, empty L1, and finds the value in the shared L2
    b = _reader(spec, store, tier, loads)
    assert b.get(key) == b"features-v1"
    assert loads == [key] and b.stats.hits[:2] == (0, 1)


def test_write_through_deletes_the_redis_copy_and_the_next_read_loads_the_new_value(
    redis_server: RedisServer, spec: Spec, l2: Callable[[str], RedisHotStore], namespace: str
) -> None:
    store = l2("eu-west")
    key = DataKey("user_features", UserKey("eu", 7))
    tier = {key: b"old"}
    loads: list[DataKey] = []
    reader = _reader(spec, store, tier, loads)
    assert reader.get(key) == b"old"
    reader.write_through(key, b"new")
    assert tier[key] == b"new" and _raw_keys(redis_server, namespace) == []
    assert reader.get(key) == b"new" and loads == [key, key]


def test_eu_personal_data_is_never_cached_in_a_us_l2(
    redis_server: RedisServer, spec: Spec, l2: Callable[[str], RedisHotStore], namespace: str
) -> None:
    store = l2("us-east")
    level = StoreCache("l2", store, ttl_s=60)
    with pytest.raises(ResidencyError):
        level.put(DataKey("user_features", UserKey("eu", 1)), b"x")
    level.put(DataKey("user_features", UserKey("us", 1)), b"x")  # a US user's data may be here
    level.put(DataKey("item_catalog", "sku-1"), b"x")  # non-personal data anywhere
    assert len(_raw_keys(redis_server, namespace)) == 2
