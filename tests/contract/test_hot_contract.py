"""The hot-tier contract, written once and run over every HotStore backend.

Backends: ``memory`` (in-process, injected clock), ``redis`` (a real standalone
redis-server) and ``redis_cluster`` (a real 3+3 Redis Cluster). Every store is built the
way a deployment builds it: a config mapping with ``type:``, through the ``BACKENDS``
registry (``build_backend``). Each test gets stores with a fresh key namespace, so tests
never see each other's keys.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from geoshard.errors import InputError, ResidencyError
from geoshard.keys import DataKey, UserKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import load_spec
from geoshard.storage.base import MAX_VALUE_BYTES, HotStore, build_backend, load_backend

BACKENDS = ["memory", "redis", "redis_cluster"]
_namespaces = itertools.count()


@pytest.fixture(scope="module")
def policy(repo_root: Path) -> ResidencyPolicy:
    return ResidencyPolicy.from_spec(load_spec(repo_root / "examples" / "local.yaml"))


@dataclass
class Harness:
    """Builds stores of one backend and moves time forward for it."""

    backend: str
    make: Callable[[str], HotStore]
    advance: Callable[[float], None]


@pytest.fixture(params=BACKENDS)
def hot(request: pytest.FixtureRequest, policy: ResidencyPolicy) -> Iterator[Harness]:
    backend: str = request.param
    namespace = f"c{next(_namespaces)}"
    made: list[HotStore] = []
    now = [1000.0]

    config: dict[str, Any] = {"type": backend, "namespace": namespace}
    runtime: dict[str, Any] = {}
    if backend == "memory":
        runtime["clock"] = lambda: now[0]
    elif backend == "redis":
        config["url"] = request.getfixturevalue("redis_server").url
    else:
        config["startup_nodes"] = request.getfixturevalue("redis_cluster").startup_nodes

    def make(region: str) -> HotStore:
        store = build_backend("hot", config, region=region, residency=policy, **runtime)
        made.append(store)
        return store

    def advance(seconds: float) -> None:
        if backend == "memory":
            now[0] += seconds
        else:
            # On purpose: a real server expires keys on its own clock, so the test lets
            # that much real time pass. Nothing else is being waited for.
            time.sleep(seconds)

    try:
        yield Harness(backend, make, advance)
    finally:
        for store in made:
            store.close()


def item(owner: str) -> DataKey:
    return DataKey("item_catalog", owner)


def user(jurisdiction: str, uid: int, data_class: str = "user_features") -> DataKey:
    return DataKey(data_class, UserKey(jurisdiction, uid))


# ------------------------------------------------------------------- basic operations


def test_put_then_get_returns_the_bytes_and_missing_is_none(hot: Harness) -> None:
    store = hot.make("us-east")
    store.put(item("sku-1"), b"\x00payload\xff")
    assert store.get(item("sku-1")) == b"\x00payload\xff"
    assert store.get(item("sku-absent")) is None


def test_str_values_are_stored_as_utf8(hot: Harness) -> None:
    store = hot.make("us-east")
    store.put(item("sku-1"), "h\u00e9llo")  # type: ignore[arg-type]
    assert store.get(item("sku-1")) == "h\u00e9llo".encode()


def test_put_overwrites_the_value_and_clears_the_ttl(hot: Harness) -> None:
    store = hot.make("us-east")
    store.put(item("sku-1"), b"old", ttl_s=100)
    store.put(item("sku-1"), b"new")
    assert store.get(item("sku-1")) == b"new"
    assert store.ttl(item("sku-1")) is None


def test_delete_reports_whether_the_key_existed(hot: Harness) -> None:
    store = hot.make("us-east")
    store.put(item("sku-1"), b"v")
    assert store.delete(item("sku-1")) is True
    assert store.get(item("sku-1")) is None
    assert store.delete(item("sku-1")) is False


def test_delete_if_equal_deletes_only_the_value_it_was_given(hot: Harness) -> None:
    store = hot.make("us-east")
    store.put(item("sku-1"), b"v1")
    assert store.delete_if_equal(item("sku-1"), b"v0") is False
    assert store.get(item("sku-1")) == b"v1"
    assert store.delete_if_equal(item("sku-1"), b"v1") is True
    assert store.get(item("sku-1")) is None
    assert store.delete_if_equal(item("sku-1"), b"v1") is False


def test_ttl_is_remaining_seconds_or_none(hot: Harness) -> None:
    store = hot.make("us-east")
    store.put(item("with"), b"v", ttl_s=100)
    store.put(item("without"), b"v")
    remaining = store.ttl(item("with"))
    assert remaining is not None and 90 < remaining <= 100
    assert store.ttl(item("without")) is None
    assert store.ttl(item("absent")) is None


def test_an_expired_key_reads_as_absent(hot: Harness) -> None:
    store = hot.make("us-east")
    store.put(item("short"), b"v", ttl_s=0.15)
    store.put(item("long"), b"v", ttl_s=60)
    assert store.get(item("short")) == b"v"
    hot.advance(0.4)
    assert store.get(item("short")) is None
    assert store.get_many([item("short"), item("long")]) == [None, b"v"]
    assert store.ttl(item("short")) is None


def test_get_many_keeps_the_order_of_keys_with_none_for_missing(hot: Harness) -> None:
    store = hot.make("us-east")
    store.put_many([(item("a"), b"A"), (item("b"), b"B")])
    keys = [item("a"), item("missing"), item("b"), item("a")]
    assert store.get_many(keys) == [b"A", None, b"B", b"A"]
    assert store.get_many([]) == []


def test_get_many_of_a_large_batch_across_nodes(hot: Harness) -> None:
    store = hot.make("us-east")
    items = [(user("us", uid), str(uid).encode()) for uid in range(0, 2500, 2)]
    store.put_many(items, ttl_s=60)
    keys = [user("us", uid) for uid in range(2500)]
    got = store.get_many(keys)
    assert got == [str(uid).encode() if uid % 2 == 0 else None for uid in range(2500)]


# ------------------------------------------------------------------- bad input


def test_put_many_validates_everything_before_writing_anything(hot: Harness) -> None:
    store = hot.make("us-east")
    batch = [(item("ok-1"), b"fine"), (item("bad"), 123), (item("ok-2"), b"fine")]
    with pytest.raises(
        InputError,
        match=r"item 1 \(item_catalog:bad\): value of type int "
        r"is not bytes.*nothing was written",
    ):
        store.put_many(batch)  # type: ignore[arg-type]
    assert store.get_many([item("ok-1"), item("bad"), item("ok-2")]) == [None, None, None]


def test_an_oversized_value_is_refused_and_nothing_written(hot: Harness) -> None:
    store = hot.make("us-east")
    big = b"x" * (MAX_VALUE_BYTES + 1)
    with pytest.raises(
        InputError,
        match=r"payload of 1,048,577 bytes is over the "
        r"1,048,576-byte limit",
    ):
        store.put(item("big"), big)
    with pytest.raises(InputError, match=r"item 1 .*over the 1,048,576-byte limit"):
        store.put_many([(item("small"), b"s"), (item("big"), big)])
    assert store.get_many([item("big"), item("small")]) == [None, None]


def test_wrong_types_are_refused(hot: Harness) -> None:
    store = hot.make("us-east")
    with pytest.raises(InputError, match=r"value of type dict is not bytes; serialise it"):
        store.put(item("k"), {"a": 1})  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"key 'k' of type str is not a DataKey"):
        store.put("k", b"v")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"key 42 of type int is not a DataKey"):
        store.get(42)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"is not a \(DataKey, bytes\) pair"):
        store.put_many([item("k")])  # type: ignore[list-item]
    assert store.get(item("k")) is None


@pytest.mark.parametrize("ttl", [0, -1, math.nan, math.inf, "10"])
def test_a_bad_ttl_is_refused_and_nothing_written(hot: Harness, ttl: object) -> None:
    store = hot.make("us-east")
    with pytest.raises(InputError, match=r"ttl_s\(=.*\) must be a finite number of seconds > 0"):
        store.put(item("k"), b"v", ttl_s=ttl)  # type: ignore[arg-type]
    assert store.get(item("k")) is None


# ------------------------------------------------------------------- residency


def test_eu_personal_data_is_refused_in_us_east_and_nothing_written(hot: Harness) -> None:
    store = hot.make("us-east")
    eu_key = user("eu", 42)
    with pytest.raises(
        ResidencyError,
        match=r"eu user_features may not be stored in "
        r"'us-east'; allowed: eu-central, eu-west",
    ):
        store.put(eu_key, b"secret")
    with pytest.raises(ResidencyError, match=r"may not be stored in 'us-east'"):
        store.put_many([(item("sku-1"), b"fine"), (eu_key, b"secret")])
    assert store.get_many([eu_key, item("sku-1")]) == [None, None]


def test_non_personal_and_allowed_personal_data_are_stored(hot: Harness) -> None:
    us_store = hot.make("us-east")
    us_store.put_many([(item("sku-1"), b"item"), (user("us", 7), b"us-user")])
    assert us_store.get_many([item("sku-1"), user("us", 7)]) == [b"item", b"us-user"]
    eu_store = hot.make("eu-west")
    eu_store.put(user("eu", 42, "sessions"), b"eu-session")
    assert eu_store.get(user("eu", 42, "sessions")) == b"eu-session"


# ------------------------------------------------------------------- key layout


def test_keys_of_one_shard_share_a_slot(hot: Harness) -> None:
    store = hot.make("eu-west")
    classes = ["user_features", "user_embeddings", "interactions", "sessions"]
    keys = [user("eu", 42, dc) for dc in classes]
    names = [store.key_name(k) for k in keys]
    assert all("{eu:42}" in n for n in names)
    slots = {key_slot(n.encode()) for n in names}
    assert len(slots) == 1
    other_users = {key_slot(store.key_name(user("eu", u)).encode()) for u in range(20)}
    assert len(other_users) > 10
    if hot.backend == "redis_cluster":
        client = store.client  # type: ignore[attr-defined]
        node = client.get_primaries()[0]
        server_slots = {
            client.execute_command("CLUSTER KEYSLOT", n, target_nodes=node) for n in names
        }
        assert server_slots == slots


def test_each_backend_is_the_registry_class_of_its_type(hot: Harness) -> None:
    store = hot.make("us-east")
    assert type(store) is load_backend("hot", hot.backend)
    assert store.config.type == hot.backend
