"""Keys: a malformed key is refused when it is made, so no tier ever sees one.

A personal datum whose owner is a plain string has no jurisdiction, and would skip
every residency check (``Tier.guard_write`` only checks keys that carry one): the key
itself refuses to exist.
"""

from __future__ import annotations

import pytest

from geoshard.errors import InputError
from geoshard.keys import DATA_CLASSES, NON_PERSONAL_CLASSES, PERSONAL_CLASSES, DataKey, UserKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import load_spec
from geoshard.storage.memory import MemoryHotStore


@pytest.mark.parametrize(
    ("data_class", "owner", "match"),
    [
        (
            "user_features",
            "eu:42",
            (
                r"owner 'eu:42' of personal data class 'user_features' must be a "
                r"UserKey; use DataKey\('user_features', UserKey.parse\('eu:42'\)\)"
            ),
        ),
        ("interactions", 42, "owner 42 of personal data class 'interactions' must be a UserKey"),
        ("sessions", None, "owner None of personal data class 'sessions' must be a UserKey"),
        (
            "item_catalg",
            "sku-1",
            "data class 'item_catalg' is unknown; did you mean 'item_catalog'",
        ),
        ("nonsense_class", "sku-1", "data class 'nonsense_class' is unknown; use one of"),
        ("item_catalog", "no spaces", "item id 'no spaces' is malformed"),
        ("item_catalog", "eu:42", "item id 'eu:42' is malformed"),
        ("item_embeddings", "x" * 129, "is malformed; use 1 to 128 characters"),
        ("item_catalog", 7, "item id 7 is malformed"),
        (
            "aggregates",
            UserKey("eu", 1),
            "data class 'aggregates' is not personal, but its owner eu:1",
        ),
    ],
)
def test_malformed_data_keys_are_refused_naming_the_value(data_class, owner, match) -> None:
    with pytest.raises(InputError, match=match):
        DataKey(data_class, owner)


def test_every_class_accepts_its_owner_kind() -> None:
    for dc in PERSONAL_CLASSES:
        assert DataKey(dc, UserKey("eu", 1)).jurisdiction == "eu"
    for dc in NON_PERSONAL_CLASSES:
        assert DataKey(dc, "sku-1.a_b").jurisdiction is None
    assert set(DATA_CLASSES) == set(PERSONAL_CLASSES) | set(NON_PERSONAL_CLASSES)


def test_eu_personal_data_cannot_reach_a_us_store_in_any_form(repo_root) -> None:
    spec = load_spec(repo_root / "examples/local.yaml")
    store = MemoryHotStore("us-east", ResidencyPolicy.from_spec(spec))
    for owner in ("eu:42", 42):
        with pytest.raises(InputError):
            store.put(DataKey("user_features", owner), b"x")  # type: ignore[arg-type]
    with pytest.raises(Exception, match=r"residency|not allowed"):
        store.put(DataKey("user_features", UserKey("eu", 42)), b"x")
    assert store.get(DataKey("aggregates", "probe")) is None and len(store) == 0
