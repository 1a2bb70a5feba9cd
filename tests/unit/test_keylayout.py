"""The key layout every backend shares: hot-tier names with hash tags, the key text and
its inverse, cold partitions and buckets, vector collections."""

from __future__ import annotations

import pytest

from geoshard.errors import InputError
from geoshard.keys import DATA_CLASSES, PERSONAL_CLASSES, DataKey, UserKey
from geoshard.storage.keylayout import (
    cold_bucket,
    cold_partition,
    hot_key_name,
    key_text,
    parse_key_text,
    require_data_key,
    vector_collection,
)


def test_hot_names_put_the_shard_in_a_hash_tag() -> None:
    key = DataKey("sessions", UserKey("eu", 42))
    assert hot_key_name(key) == "{eu:42}:sessions:eu:42"
    assert hot_key_name(key, namespace="gs") == "gs:{eu:42}:sessions:eu:42"
    assert hot_key_name(DataKey("item_catalog", "sku-1")) == "{sku-1}:item_catalog:sku-1"
    assert hot_key_name(key, shard_of=lambda k: "users-7") == "{users-7}:sessions:eu:42"


@pytest.mark.parametrize("shard", ["", "a{b", "a}b", 7])
def test_a_bad_shard_name_is_refused(shard: object) -> None:
    with pytest.raises(InputError, match=r"shard name .* must be a non-empty string without"):
        hot_key_name(DataKey("item_catalog", "x"), shard_of=lambda k: shard)  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize("data_class", DATA_CLASSES)
def test_key_text_round_trips_for_every_class(data_class: str) -> None:
    owner: UserKey | str = (
        UserKey("us-west", 2**63 - 1) if data_class in PERSONAL_CLASSES else "sku_1.v-2"
    )
    key = DataKey(data_class, owner)
    assert key_text(key) == f"{data_class}:{owner}"
    assert parse_key_text(key_text(key)) == key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "user_features",
            r"key text 'user_features' is malformed; expected '<data_class>:<owner>'",
        ),
        ("user_features:42", r"user key '42' is malformed"),
        ("item_catalog:eu:42", r"item id 'eu:42' is malformed"),
        (
            "user_featurs:eu:42",
            r"data class 'user_featurs' is unknown; did you mean 'user_features'",
        ),
    ],
)
def test_malformed_key_text_is_refused_naming_it(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_key_text(text)


@pytest.mark.parametrize("key", ["item_catalog:sku-1", 42, None])
def test_only_data_keys_are_named(key: object) -> None:
    with pytest.raises(
        InputError,
        match=rf"key {key!r} of type {type(key).__name__} is not a "
        r"DataKey; build one with DataKey\(data_class, owner\)",
    ):
        require_data_key(key)


def test_cold_partitions_nest_region_class_bucket_date() -> None:
    assert cold_partition("eu-west") == "region=eu-west"
    assert cold_partition("eu-west", "sessions") == "region=eu-west/data_class=sessions"
    assert (
        cold_partition("eu-west", "sessions", bucket=7)
        == "region=eu-west/data_class=sessions/shard=0007"
    )
    assert (
        cold_partition("eu-west", "sessions", bucket=12, date="2024-05-01")
        == "region=eu-west/data_class=sessions/shard=0012/date=2024-05-01"
    )
    with pytest.raises(InputError, match=r"give data_class before bucket and bucket before date"):
        cold_partition("eu-west", "sessions", date="2024-05-01")


def test_cold_buckets_are_a_stable_crc32() -> None:
    # Known answers: files already written depend on them, so they may never change.
    assert [cold_bucket(o, 16) for o in ("eu:42", "us:7", "sku-1")] == [15, 13, 14]
    assert all(0 <= cold_bucket(f"eu:{i}", 5) < 5 for i in range(100))


def test_vector_collections_are_per_region_with_underscores() -> None:
    assert vector_collection("geoshard", "eu-west") == "geoshard_eu_west"
    assert vector_collection("contract", "us-east-1") == "contract_us_east_1"
