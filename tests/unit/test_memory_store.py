"""MemoryHotStore specifics (the shared contract is in tests/contract): injected clock,
passive expiry, purge and custom shards. The key layout itself is tested in
test_keylayout.py."""

from __future__ import annotations

import pytest

from geoshard.errors import ConfigError, InputError
from geoshard.keys import DataKey, UserKey
from geoshard.storage.base import validate_ttl_s
from geoshard.storage.memory import MemoryHotStore, MemoryHotStoreConfig


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ttl_counts_down_with_the_injected_clock_and_expires_exactly_at_the_deadline() -> None:
    clock = Clock()
    store = MemoryHotStore("us-east", None, clock=clock)
    key = DataKey("aggregates", "top-10")
    store.put(key, b"v", ttl_s=10)
    clock.now += 4
    assert store.ttl(key) == pytest.approx(6)
    clock.now += 5.999
    assert store.get(key) == b"v"
    clock.now += 0.001
    assert store.get(key) is None and store.ttl(key) is None


def test_purge_expired_drops_only_dead_entries() -> None:
    clock = Clock()
    store = MemoryHotStore("us-east", None, clock=clock)
    store.put_many([(DataKey("aggregates", f"a{i}"), b"v") for i in range(3)], ttl_s=1)
    store.put(DataKey("aggregates", "forever"), b"v")
    clock.now += 2
    assert len(store) == 4
    assert store.purge_expired() == 3
    assert len(store) == 1


def test_the_store_names_keys_with_its_namespace_and_shard_function() -> None:
    store = MemoryHotStore(
        "us-east", None, MemoryHotStoreConfig(namespace="gs"), shard_of=lambda k: "s1"
    )
    assert store.key_name(DataKey("item_catalog", "x")) == "gs:{s1}:item_catalog:x"


def test_personal_data_needs_a_residency_policy() -> None:
    store = MemoryHotStore("eu-west", None)
    with pytest.raises(
        ConfigError,
        match=r"has no residency policy, so it may not store "
        r"personal data \(user_features:eu:1\)",
    ):
        store.put(DataKey("user_features", UserKey("eu", 1)), b"v")
    assert len(store) == 0


def test_a_smaller_size_limit_from_config() -> None:
    store = MemoryHotStore("us-east", None, MemoryHotStoreConfig(max_value_bytes=4))
    with pytest.raises(InputError, match=r"payload of 5 bytes is over the 4-byte limit"):
        store.put(DataKey("item_catalog", "x"), b"12345")


def test_validate_ttl_s() -> None:
    assert validate_ttl_s(None) is None and validate_ttl_s(2) == 2.0
    with pytest.raises(InputError, match=r"ttl_s\(=True\) must be a finite number"):
        validate_ttl_s(True)
