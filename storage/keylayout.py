"""How a :class:`~geoshard.keys.DataKey` becomes a name in each storage backend.

One module, so that every backend, and every tool that reads a backend directly (a
``redis-cli`` session, a Parquet query, a catalog audit), agrees on the names:

* **key text** ``<data_class>:<owner>`` (:func:`key_text`, inverse :func:`parse_key_text`):
  the Milvus row id and the catalog's tier-membership key.
* **hot tier** (Redis, and the in-process store that mirrors it)
  ``[<namespace>:]{<shard>}:<data_class>:<owner>`` (:func:`hot_key_name`). The part in
  braces is a Redis Cluster *hash tag*: only it is hashed, so every key of one logical
  shard lands in the same slot (and on the same node), which lets a batch for one user
  be served by one MGET and one round trip.
* **cold tier** (Parquet) hive partitions
  ``region=<region>/data_class=<class>/shard=<bucket:04d>/date=<YYYY-MM-DD>``
  (:func:`cold_partition`), the bucket being a stable CRC-32 of the owner
  (:func:`cold_bucket`).
* **warm tier** (Milvus) collections ``<prefix>_<region>``, ``-`` turned into ``_``
  (:func:`vector_collection`).

Pure functions with no I/O.

Examples:
    >>> from geoshard.keys import DataKey, UserKey
    >>> key = DataKey("user_features", UserKey("eu", 42))
    >>> key_text(key), hot_key_name(key)
    ('user_features:eu:42', '{eu:42}:user_features:eu:42')
    >>> parse_key_text("user_features:eu:42") == key
    True
    >>> cold_partition("eu-west", "user_features", bucket=7, date="2024-05-01")
    'region=eu-west/data_class=user_features/shard=0007/date=2024-05-01'
    >>> vector_collection("geoshard", "eu-west")
    'geoshard_eu_west'
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from geoshard.errors import InputError
from geoshard.keys import PERSONAL_CLASSES, DataKey, UserKey

__all__ = [
    "ShardOf",
    "cold_bucket",
    "cold_partition",
    "default_shard_of",
    "hot_key_name",
    "key_text",
    "parse_key_text",
    "require_data_key",
    "vector_collection",
]

#: Maps a key to its logical shard name (the hash tag). Must not contain '{' or '}'.
ShardOf = Callable[[DataKey], str]


def require_data_key(key: object) -> DataKey:
    """Return ``key`` when it is a :class:`DataKey`.

    A DataKey validates its class and owner when it is built, so this type check is all
    a backend needs before it names the key.

    Raises:
        InputError: ``key`` is something else (a string, an id ...).
    """
    if not isinstance(key, DataKey):
        raise InputError(
            f"key {key!r} of type {type(key).__name__} is not a DataKey; build "
            "one with DataKey(data_class, owner)"
        )
    return key


def key_text(key: DataKey) -> str:
    """``<data_class>:<owner>``: the text that names a datum in Milvus and the catalog.

    Raises:
        InputError: ``key`` is not a :class:`DataKey`.
    """
    return str(require_data_key(key))


def parse_key_text(text: str) -> DataKey:
    """The :class:`DataKey` that :func:`key_text` wrote as ``text``.

    Raises:
        InputError: ``text`` is not ``<data_class>:<owner>`` of a known class and a valid
            owner (a user key such as ``eu:42`` for personal classes).
    """
    if not isinstance(text, str) or ":" not in text:
        raise InputError(
            f"key text {text!r} is malformed; expected '<data_class>:<owner>' "
            "such as 'user_features:eu:42' or 'item_catalog:sku-1'"
        )
    data_class, _, owner = text.partition(":")
    if data_class in PERSONAL_CLASSES:
        return DataKey(data_class, UserKey.parse(owner))
    return DataKey(data_class, owner)


def default_shard_of(key: DataKey) -> str:
    """The default hot-tier shard of a key: its owner (``eu:42``, or the item id).

    All data classes of one user (features, embeddings, sessions ...) then share a slot.
    """
    return str(key.owner)


def hot_key_name(key: DataKey, shard_of: ShardOf = default_shard_of, namespace: str = "") -> str:
    """The hot-tier key for ``key``: ``[<namespace>:]{<shard>}:<data_class>:<owner>``.

    Args:
        key: the datum.
        shard_of: maps the key to its logical shard (the Redis Cluster hash tag).
        namespace: an optional prefix (no braces), for several deployments in one Redis.

    Raises:
        InputError: ``key`` is not a :class:`DataKey`, or the shard name is empty or
            contains a brace (it would break the hash tag).
    """
    require_data_key(key)
    shard = shard_of(key)
    if not isinstance(shard, str) or not shard or "{" in shard or "}" in shard:
        raise InputError(
            f"shard name {shard!r} for key {key} must be a non-empty string "
            "without '{' or '}'; fix the shard_of function"
        )
    name = f"{{{shard}}}:{key.data_class}:{key.owner}"
    return f"{namespace}:{name}" if namespace else name


def cold_bucket(owner: str, buckets: int) -> int:
    """The cold-tier hash bucket of an owner: CRC-32, stable across processes and versions.

    Examples:
        >>> cold_bucket("eu:42", 16)
        15
    """
    return zlib.crc32(owner.encode("utf-8")) % buckets


def cold_partition(
    region: str,
    data_class: str | None = None,
    *,
    bucket: int | None = None,
    date: str | None = None,
) -> str:
    """The cold tier's hive partition path, as deep as the parts given.

    Args:
        region: the region whose records the partition holds.
        data_class: the class (needed for a bucket).
        bucket: the owner's bucket (:func:`cold_bucket`), needed for a date.
        date: ``YYYY-MM-DD`` the records were appended with.

    Raises:
        InputError: a deeper part without the one above it.
    """
    if (bucket is not None and data_class is None) or (date is not None and bucket is None):
        raise InputError(
            f"cold partition for region '{region}': give data_class before "
            f"bucket and bucket before date (got data_class={data_class!r}, "
            f"bucket={bucket!r}, date={date!r})"
        )
    parts = [f"region={region}"]
    if data_class is not None:
        parts.append(f"data_class={data_class}")
    if bucket is not None:
        parts.append(f"shard={bucket:04d}")
    if date is not None:
        parts.append(f"date={date}")
    return "/".join(parts)


def vector_collection(prefix: str, region: str) -> str:
    """The Milvus collection of one region: ``<prefix>_<region>`` with ``-`` as ``_``
    (Milvus names allow letters, digits and underscores only)."""
    return f"{prefix}_{region.replace('-', '_')}"
