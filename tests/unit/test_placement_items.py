"""Item-attribute shard maps."""

from __future__ import annotations

import pytest

from geoshard.errors import ConfigError, InputError
from geoshard.shards import ItemShardMap


@pytest.fixture
def shards() -> ItemShardMap:
    return ItemShardMap("category", {"books": "s1", "music": "s2", "7": "s3"}, "s0")


def test_mapped_and_default_values(shards: ItemShardMap) -> None:
    assert shards.shard_for({"id": 1, "category": "books"}) == "s1"
    assert shards.shard_for({"category": "garden"}) == "s0"
    assert shards.shard_for({"category": 7}) == "s3"  # compared as text
    assert shards.shards == ("s0", "s1", "s2", "s3")


def test_batch_form_keeps_order(shards: ItemShardMap) -> None:
    items = [{"category": "music"}, {"category": "x"}, {"category": "books"}]
    assert shards.shards_for(items) == ["s2", "s0", "s1"]
    assert shards.shards_for([]) == []


def test_missing_attribute_names_it_and_suggests(shards: ItemShardMap) -> None:
    with pytest.raises(
        InputError,
        match=r"item has no attribute 'category' \(it has "
        r"\['categry', 'id'\]\); did you mean 'categry'\?",
    ):
        shards.shard_for({"id": 3, "categry": "books"})
    with pytest.raises(InputError, match=r"item #1: item has no attribute 'category'"):
        shards.shards_for([{"category": "books"}, {"id": 2}])
    with pytest.raises(InputError, match=r"attribute 'category' is None"):
        shards.shard_for({"category": None})


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("", {}, "s0"), r"attribute\(=''\) must be a non-empty str"),
        (("category", {}, ""), r"default_shard\(=''\) must be a non-empty str"),
        (
            ("category", {7: "s1"}, "s0"),
            r"value 7 in value_to_shard must be a str; write it as '7'",
        ),
        (("category", {"books": None}, "s0"), r"shard\(=None\) for value 'books' must be"),
    ],
)
def test_bad_config(args: tuple[object, object, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ItemShardMap(*args)  # type: ignore[arg-type]
