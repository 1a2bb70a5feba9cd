"""The in-process hot store, and the hot-tier rules every backend shares.

:class:`MemoryHotStore` is a dict with TTLs read from an injectable clock. It is a test
double for our own logic *and* a real backend for the simulator's what-ifs, so it keeps
exactly the contract of the Redis stores (``tests/contract/test_hot_contract.py`` runs
the same suite over all of them).

The shared rules live here, with no Redis import, so every backend applies them the same
way and before any I/O:

* :func:`hot_key_name`: the key layout ``[<namespace>:]{<shard>}:<data_class>:<owner>``.
  The part in braces is a Redis Cluster *hash tag*: only it is hashed, so every key of
  one logical shard lands in the same slot (and on the same node), which lets a batch
  for one user be served by one MGET and one round trip.
* :func:`prepare_writes`: type, size and residency checks of a whole batch before
  anything is written; one bad item and nothing is written.
* :func:`validate_ttl_s`: a TTL is a finite number of seconds > 0, or None.

Examples:
    >>> from geoshard.keys import DataKey, UserKey
    >>> store = MemoryHotStore("us-east", residency=None)
    >>> key = DataKey("item_catalog", "sku-1")
    >>> store.put(key, b"{}", ttl_s=30)
    >>> store.get(key), round(store.ttl(key))
    (b'{}', 30)
    >>> hot_key_name(DataKey("user_features", UserKey("eu", 42)))
    '{eu:42}:user_features:eu:42'
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

from pydantic import Field

from geoshard.errors import InputError
from geoshard.keys import DataKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.storage.base import MAX_VALUE_BYTES, BackendConfig, HotStore, validate_value

__all__ = [
    "MemoryHotStore",
    "MemoryHotStoreConfig",
    "ShardOf",
    "default_shard_of",
    "hot_key_name",
    "prepare_writes",
    "validate_ttl_s",
]

#: Maps a key to its logical shard name (the hash tag). Must not contain '{' or '}'.
ShardOf = Callable[[DataKey], str]


def default_shard_of(key: DataKey) -> str:
    """The default shard of a key: its owner (``eu:42`` for a user, the item id for an item).

    All data classes of one user (features, embeddings, sessions ...) then share a slot.
    """
    return str(key.owner)


def _check_key(key: object) -> DataKey:
    if not isinstance(key, DataKey):
        raise InputError(f"key {key!r} of type {type(key).__name__} is not a DataKey; build "
                         "one with DataKey(data_class, owner)")
    return key


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
    _check_key(key)
    shard = shard_of(key)
    if not isinstance(shard, str) or not shard or "{" in shard or "}" in shard:
        raise InputError(f"shard name {shard!r} for key {key} must be a non-empty string "
                         "without '{' or '}'; fix the shard_of function")
    tag = "{" + shard + "}"
    return f"{namespace}:{tag}:{key.data_class}:{key.owner}" if namespace \
        else f"{tag}:{key.data_class}:{key.owner}"


def validate_ttl_s(ttl_s: object) -> float | None:
    """Return ``ttl_s`` as a float when it is a finite number > 0, or None for no expiry.

    Raises:
        InputError: zero, negative, NaN, infinite or not a number.
    """
    if ttl_s is None:
        return None
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or \
            not math.isfinite(ttl_s) or ttl_s <= 0:
        raise InputError(f"ttl_s(={ttl_s!r}) must be a finite number of seconds > 0, or None "
                         "for no expiry (nothing was written)")
    return float(ttl_s)


def prepare_writes(store: HotStore, items: Sequence[tuple[DataKey, object]],
                   ttl_s: object, *, max_value_bytes: int = MAX_VALUE_BYTES,
                   ) -> tuple[list[tuple[DataKey, bytes]], float | None]:
    """Validate a whole write batch before any I/O; one bad item and nothing is written.

    Checks, in order: every item is a ``(DataKey, bytes-like)`` pair, every value is
    within ``max_value_bytes``, ``ttl_s`` is valid, and the store's region may hold every
    key (:meth:`~geoshard.storage.base.Tier.guard_write`).

    Returns:
        The items with values as ``bytes``, and the TTL as a float or None.

    Raises:
        InputError: a malformed item, key, value or TTL (the message names it).
        ResidencyError: a personal key may not be stored in ``store.region``.
        ConfigError: personal data and a store without a residency policy.
    """
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InputError(f"items must be a sequence of (DataKey, bytes) pairs; got "
                         f"{type(items).__name__}")
    prepared: list[tuple[DataKey, bytes]] = []
    for i, item in enumerate(items):
        if not isinstance(item, tuple) or len(item) != 2:
            raise InputError(f"item {i} ({item!r:.60}) is not a (DataKey, bytes) pair "
                             "(nothing was written)")
        key, value = item
        _check_key(key)
        try:
            data = validate_value(value, max_bytes=max_value_bytes)
        except InputError as exc:
            raise InputError(f"item {i} ({key}): {exc} (nothing was written)") from None
        prepared.append((key, data))
    ttl = validate_ttl_s(ttl_s)
    store.guard_write([k for k, _ in prepared])
    return prepared, ttl


class MemoryHotStoreConfig(BackendConfig):
    """Config of :class:`MemoryHotStore` (``type: memory``).

    Attributes:
        type: always ``memory``.
        namespace: optional key prefix (see :func:`hot_key_name`).
        max_value_bytes: largest value accepted.
    """

    type: Literal["memory"] = "memory"
    namespace: str = Field(default="", pattern=r"^[A-Za-z0-9_.\-]*$")
    max_value_bytes: int = Field(default=MAX_VALUE_BYTES, gt=0)


class MemoryHotStore(HotStore):
    """The hot-tier contract in one process: a dict of ``key -> (value, expiry)``.

    Thread-safe (one lock). Expired entries are dropped lazily when read, like Redis's
    passive expiry; :meth:`purge_expired` drops them all at once.

    Args:
        region: the region this store's data lives in (the residency guard checks it).
        residency: the residency policy; None only for stores that never see personal data.
        config: namespace and size limit (defaults when None).
        clock: seconds, monotonic; injected by tests and the simulator.
        shard_of: maps a key to its logical shard (the key's hash tag).

    Examples:
        >>> now = [0.0]
        >>> store = MemoryHotStore("us-east", None, clock=lambda: now[0])
        >>> store.put(DataKey("aggregates", "top"), b"1", ttl_s=10)
        >>> now[0] = 10.0
        >>> store.get(DataKey("aggregates", "top")) is None
        True
    """

    config_model: ClassVar[type[BackendConfig]] = MemoryHotStoreConfig

    def __init__(self, region: str, residency: ResidencyPolicy | None,
                 config: MemoryHotStoreConfig | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 shard_of: ShardOf = default_shard_of) -> None:
        super().__init__(region, residency)
        self.config = config or MemoryHotStoreConfig()
        self._clock = clock
        self._shard_of = shard_of
        self._data: dict[str, tuple[bytes, float | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: MemoryHotStoreConfig, *, region: str,
                    residency: ResidencyPolicy | None) -> MemoryHotStore:
        """Build a store from its config (the registry's entry point)."""
        return cls(region, residency, config)

    def key_name(self, key: DataKey) -> str:
        """The layout name of ``key`` (the same as a Redis store would use)."""
        return hot_key_name(key, self._shard_of, self.config.namespace)

    def _live(self, name: str, now: float) -> bytes | None:
        entry = self._data.get(name)
        if entry is None:
            return None
        value, expire_at = entry
        if expire_at is not None and expire_at <= now:
            del self._data[name]
            return None
        return value

    def get(self, key: DataKey) -> bytes | None:
        """The value, or None when absent or expired.

        Raises:
            InputError: ``key`` is not a DataKey.
        """
        name = self.key_name(key)
        with self._lock:
            return self._live(name, self._clock())

    def get_many(self, keys: Sequence[DataKey]) -> list[bytes | None]:
        """Values in the order of ``keys``; None for absent or expired ones."""
        names = [self.key_name(k) for k in keys]
        with self._lock:
            now = self._clock()
            return [self._live(n, now) for n in names]

    def put(self, key: DataKey, value: bytes, ttl_s: float | None = None) -> None:
        """Write one value; type, size, TTL and residency are checked first."""
        self.put_many([(key, value)], ttl_s)

    def put_many(self, items: Sequence[tuple[DataKey, bytes]], ttl_s: float | None = None) -> None:
        """Write many values with one TTL; the whole batch is validated before any write."""
        prepared, ttl = prepare_writes(self, items, ttl_s,
                                       max_value_bytes=self.config.max_value_bytes)
        names = [self.key_name(k) for k, _ in prepared]
        with self._lock:
            expire_at = None if ttl is None else self._clock() + ttl
            for name, (_, data) in zip(names, prepared, strict=True):
                self._data[name] = (data, expire_at)

    def delete(self, key: DataKey) -> bool:
        """Delete; True when a live entry existed."""
        name = self.key_name(key)
        with self._lock:
            existed = self._live(name, self._clock()) is not None
            self._data.pop(name, None)
            return existed

    def delete_if_equal(self, key: DataKey, value: bytes) -> bool:
        """Delete while the live value equals ``value`` (under the store's lock)."""
        name = self.key_name(key)
        with self._lock:
            if self._live(name, self._clock()) != bytes(value):
                return False
            del self._data[name]
            return True

    def ttl(self, key: DataKey) -> float | None:
        """Remaining seconds to live; None when the key has no TTL or is absent."""
        name = self.key_name(key)
        with self._lock:
            now = self._clock()
            if self._live(name, now) is None:
                return None
            expire_at = self._data[name][1]
            return None if expire_at is None else expire_at - now

    def purge_expired(self) -> int:
        """Drop every expired entry now; returns how many were dropped."""
        with self._lock:
            now = self._clock()
            dead = [n for n, (_, exp) in self._data.items() if exp is not None and exp <= now]
            for n in dead:
                del self._data[n]
            return len(dead)

    def __len__(self) -> int:
        """Entries held, expired ones included until read or purged."""
        return len(self._data)

    def close(self) -> None:
        """Nothing to release; kept for the Tier lifecycle."""
