"""The storage backend registry: every entry is a complete backend, and build_backend
turns a config into one or refuses it with the reason and the fix."""

from __future__ import annotations

import inspect

import pytest

from geoshard.errors import ConfigError
from geoshard.keys import DataKey
from geoshard.storage.base import (
    BACKENDS,
    BackendConfig,
    Catalog,
    ColdStore,
    HotStore,
    VectorStore,
    build_backend,
    load_backend,
)
from geoshard.storage.memory import MemoryHotStore, MemoryHotStoreConfig
from geoshard.storage.parquet_store import ParquetColdStoreConfig

INTERFACES: dict[str, type] = {
    "hot": HotStore,
    "vector": VectorStore,
    "cold": ColdStore,
    "catalog": Catalog,
}


@pytest.mark.parametrize(("tier", "type_"), sorted(BACKENDS))
def test_every_entry_is_a_complete_backend_of_its_tier(tier: str, type_: str) -> None:
    cls = load_backend(tier, type_)  # type: ignore[arg-type]
    assert issubclass(cls, INTERFACES[tier]) and cls.tier == tier
    # from_config is abstract in Backend, so a concrete class has its own
    assert not inspect.isabstract(cls), f"{cls.__name__} leaves abstract methods"
    assert cls.config_model.model_fields["type"].default == type_


def test_a_mapping_is_validated_by_the_backend_config_model() -> None:
    store = build_backend(
        "hot",
        {"type": "memory", "namespace": "gs", "max_value_bytes": 8},
        region="us-east",
        residency=None,
    )
    assert isinstance(store, MemoryHotStore)
    assert store.config == MemoryHotStoreConfig(namespace="gs", max_value_bytes=8)
    assert store.region == "us-east"


def test_a_config_model_is_used_as_it_is() -> None:
    config = MemoryHotStoreConfig(namespace="m1")
    store = build_backend("hot", config, region="eu-west", residency=None)
    assert store.config is config


def test_runtime_arguments_reach_the_backend() -> None:
    now = [0.0]
    store = build_backend(
        "hot", {"type": "memory"}, region="us-east", residency=None, clock=lambda: now[0]
    )
    key = DataKey("aggregates", "top")
    store.put(key, b"v", ttl_s=10)
    now[0] = 10.0
    assert store.get(key) is None  # expired on the injected clock, not the wall clock


@pytest.mark.parametrize(
    ("tier", "config", "message"),
    [
        (
            "hot",
            {"namespace": "x"},
            (
                r"hot backend config needs 'type:' naming the backend; use one of memory, redis, "
                r"redis_cluster"
            ),
        ),
        (
            "hot",
            {"type": "rediss"},
            (
                r"unknown hot backend type 'rediss'; did you mean 'redis'\? \(known: memory, redis, "
                r"redis_cluster\)"
            ),
        ),
        ("cold", {"type": "redis"}, r"unknown cold backend type 'redis' \(known: parquet\)"),
        (
            "hot",
            {"type": "memory", "namspace": "x"},
            (
                r"hot backend 'memory' config is invalid: namspace: Extra inputs are not permitted; "
                r"see geoshard\.storage\.memory\.MemoryHotStoreConfig"
            ),
        ),
        (
            "hot",
            {"type": "redis", "url": "http://x"},
            r"hot backend 'redis' config is invalid: url: String should match pattern",
        ),
        ("hot", ParquetColdStoreConfig(root="/tmp/x"), r"unknown hot backend type 'parquet'"),
        (
            "hot",
            "redis://127.0.0.1:6379",
            r"hot backend config must be a mapping with 'type:' or a backend config model; got str",
        ),
    ],
)
def test_bad_configs_are_refused_with_the_fix(tier: str, config: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_backend(tier, config, region="us-east", residency=None)  # type: ignore[call-overload]


def test_a_config_model_that_is_not_the_backend_model_is_refused() -> None:
    with pytest.raises(
        ConfigError,
        match=r"hot backend 'memory' takes a MemoryHotStoreConfig; "
        r"got a BackendConfig",
    ):
        build_backend("hot", BackendConfig(type="memory"), region="us-east", residency=None)


def test_an_unknown_runtime_argument_names_the_ones_taken() -> None:
    with pytest.raises(
        ConfigError,
        match=r"hot backend 'memory' takes no runtime argument "
        r"'filesystem'; it takes: clock, shard_of",
    ):
        build_backend("hot", {"type": "memory"}, region="us-east", residency=None, filesystem=None)
