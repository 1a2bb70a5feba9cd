"""Item-attribute shard maps: route items by one attribute (category, market, ...).

Items (not users) are often sharded by an attribute so that recall for one category
reads one shard. :class:`ItemShardMap` maps attribute values to shards explicitly and
sends every unmapped value to a default shard.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from geoshard.errors import ConfigError, InputError, did_you_mean

__all__ = ["ItemShardMap"]


def _value_key(value: object) -> str:
    # Attribute values arrive from JSON, Parquet or Python; compare them as text so that
    # 7 and "7" land on the same shard.
    return value if isinstance(value, str) else str(value)


class ItemShardMap:
    """Maps an item's attribute value to a shard name.

    Args:
        attribute: the attribute to route on, e.g. ``"category"``.
        value_to_shard: explicit ``value -> shard``; values are compared as text
            (``str(value)``).
        default_shard: the shard for values not in ``value_to_shard``.

    Raises:
        ConfigError: an empty attribute or shard name, or a non-str key or shard.

    Examples:
        >>> shards = ItemShardMap("category", {"books": "s1", "music": "s2"}, "s0")
        >>> shards.shard_for({"id": 9, "category": "music"})
        's2'
        >>> shards.shard_for({"category": "garden"})
        's0'
    """

    __slots__ = ("_attribute", "_default", "_map")

    def __init__(
        self, attribute: str, value_to_shard: Mapping[str, str], default_shard: str
    ) -> None:
        if not isinstance(attribute, str) or not attribute:
            raise ConfigError(f"attribute(={attribute!r}) must be a non-empty str.")
        if not isinstance(default_shard, str) or not default_shard:
            raise ConfigError(f"default_shard(={default_shard!r}) must be a non-empty str.")
        for value, shard in value_to_shard.items():
            if not isinstance(value, str):
                raise ConfigError(
                    f"value {value!r} in value_to_shard must be a str; write it as {str(value)!r}."
                )
            if not isinstance(shard, str) or not shard:
                raise ConfigError(f"shard(={shard!r}) for value {value!r} must be a non-empty str.")
        self._attribute = attribute
        self._map: Mapping[str, str] = MappingProxyType(dict(value_to_shard))
        self._default = default_shard

    @property
    def attribute(self) -> str:
        """The attribute items are routed on."""
        return self._attribute

    @property
    def value_to_shard(self) -> Mapping[str, str]:
        """Read-only explicit mapping ``value -> shard``."""
        return self._map

    @property
    def default_shard(self) -> str:
        """The shard for unmapped values."""
        return self._default

    @property
    def shards(self) -> tuple[str, ...]:
        """Every shard this map can return, sorted, the default included."""
        return tuple(sorted({*self._map.values(), self._default}))

    def shard_for_value(self, value: object) -> str:
        """Return the shard for one attribute value (the default when unmapped).

        Raises:
            InputError: the value is ``None``.
        """
        if value is None:
            raise InputError(f"attribute '{self._attribute}' is None; give it a value.")
        return self._map.get(_value_key(value), self._default)

    def shard_for(self, attrs: Mapping[str, object]) -> str:
        """Return the shard for an item given its attributes.

        Raises:
            InputError: the attribute is missing (with a did-you-mean over the given
                attribute names) or ``None``.
        """
        try:
            value = attrs[self._attribute]
        except KeyError:
            raise InputError(
                f"item has no attribute '{self._attribute}' (it has "
                f"{sorted(map(str, attrs))}){did_you_mean(self._attribute, map(str, attrs))}"
            ) from None
        return self.shard_for_value(value)

    def shards_for(self, items: Iterable[Mapping[str, object]]) -> list[str]:
        """Return the shard of every item, in order.

        Raises:
            InputError: an item lacks the attribute; the message gives its position.
        """
        out: list[str] = []
        for position, attrs in enumerate(items):
            try:
                out.append(self.shard_for(attrs))
            except InputError as exc:
                raise InputError(f"item #{position}: {exc}") from None
        return out

    def __repr__(self) -> str:
        return (
            f"ItemShardMap(attribute={self._attribute!r}, values={len(self._map)}, "
            f"default_shard={self._default!r})"
        )
