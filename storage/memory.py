"""The in-process hot store: the hot-tier contract in one process.

:class:`MemoryHotStore` is a dict with TTLs read from an injectable clock. It is a test
double for our own logic *and* a real backend for the simulator's what-ifs, so it keeps
exactly the contract of the Redis stores (``tests/contract/test_hot_contract.py`` runs
the same suite over all of them): the same key layout
(:func:`~geoshard.storage.keylayout.hot_key_name`) and the same checks of a write batch
before anything is written (:func:`~geoshard.storage.base.prepare_writes`).

Examples:
    >>> from geoshard.keys import DataKey
    >>> store = MemoryHotStore("us-east", residency=None)
    >>> key = DataKey("item_catalog", "sku-1")
    >>> store.put(key, b"{}", ttl_s=30)
    >>> store.get(key), round(store.ttl(key))
    (b'{}', 30)
    >>> store.key_name(key)
    '{sku-1}:item_catalog:sku-1'
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal, Self

from pydantic import Field

from geoshard.keys import DataKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.storage.base import MAX_VALUE_BYTES, BackendConfig, HotStore, prepare_writes
from geoshard.storage.keylayout import ShardOf, default_shard_of, hot_key_name

__all__ = ["MemoryHotStore", "MemoryHotStoreConfig"]


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
    config: MemoryHotStoreConfig

    def __init__(
        self,
        region: str,
        residency: ResidencyPolicy | None,
        config: MemoryHotStoreConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        shard_of: ShardOf = default_shard_of,
    ) -> None:
        super().__init__(region, residency)
        self.config = config or MemoryHotStoreConfig()
        self._clock = clock
        self._shard_of = shard_of
        self._data: dict[str, tuple[bytes, float | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(
        cls,
        config: MemoryHotStoreConfig,
        *,
        region: str,
        residency: ResidencyPolicy | None,
        clock: Callable[[], float] = time.monotonic,
        shard_of: ShardOf = default_shard_of,
    ) -> Self:
        """Build a store from its config (the registry's entry point); ``clock`` and
        ``shard_of`` as for the constructor."""
        return cls(region, residency, config, clock=clock, shard_of=shard_of)

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
        prepared, ttl = prepare_writes(
            self, items, ttl_s, max_value_bytes=self.config.max_value_bytes
        )
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
