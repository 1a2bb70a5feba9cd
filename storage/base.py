"""One small interface per storage tier, and the registry that picks a backend by ``type:``.

The model is Feast's online/offline split: each tier is an abstract class with a handful
of methods, each backend is a subclass with a pydantic config whose ``type`` field names
it, and :data:`BACKENDS` maps ``(tier, type)`` to a dotted path, so backends are found
by an explicit registry and never by scanning the package tree.

Every write of a datum goes through :meth:`Tier.guard_write`, which validates the input
and checks residency for the tier's region *before* anything is written.

Tiers:
    * :class:`HotStore`: key -> bytes with TTL (Redis).
    * :class:`VectorStore`: embeddings with attributes, ANN search (Milvus).
    * :class:`ColdStore`: append-only partitioned records (Parquet).
    * :class:`Catalog`: regions, nodes, shards, placements, audit events (SQL).
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from geoshard.errors import ConfigError, InputError, did_you_mean
from geoshard.keys import DataKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.storage.keylayout import require_data_key

__all__ = [
    "BACKENDS",
    "MAX_VALUE_BYTES",
    "BackendConfig",
    "Catalog",
    "ColdStore",
    "HotStore",
    "SearchHit",
    "Tier",
    "TierName",
    "VectorStore",
    "load_backend",
    "prepare_writes",
    "validate_embeddings",
    "validate_ttl_s",
    "validate_value",
]

TierName = Literal["hot", "vector", "cold", "catalog"]

#: Largest value a hot-tier write accepts (Redis allows 512 MiB; a feature row is KiBs).
MAX_VALUE_BYTES = 1 << 20


class BackendConfig(BaseModel):
    """Base of every backend config: ``type`` picks the backend from :data:`BACKENDS`."""

    model_config = ConfigDict(extra="forbid")
    type: str


#: (tier, type) -> "module:Class". Explicit, so wheels and editable installs agree.
BACKENDS: dict[tuple[str, str], str] = {
    ("hot", "redis"): "geoshard.storage.redis_store:RedisHotStore",
    ("hot", "redis_cluster"): "geoshard.storage.redis_store:RedisClusterHotStore",
    ("hot", "memory"): "geoshard.storage.memory:MemoryHotStore",
    ("vector", "milvus"): "geoshard.storage.milvus_store:MilvusVectorStore",
    ("cold", "parquet"): "geoshard.storage.parquet_store:ParquetColdStore",
    ("catalog", "sql"): "geoshard.storage.catalog:SqlCatalog",
}


def load_backend(tier: TierName, type_: str) -> type[Tier]:
    """Import the backend class for ``(tier, type_)``.

    Raises:
        ConfigError: for an unknown type, with the closest valid name.
    """
    path = BACKENDS.get((tier, type_))
    if path is None:
        known = sorted(t for (ti, t) in BACKENDS if ti == tier)
        raise ConfigError(f"unknown {tier} backend type '{type_}'{did_you_mean(type_, known)}"
                          f" (known: {', '.join(known)})")
    module, _, name = path.partition(":")
    cls: type[Tier] = getattr(importlib.import_module(module), name)
    return cls


def validate_value(value: object, *, max_bytes: int = MAX_VALUE_BYTES) -> bytes:
    """Return ``value`` as bytes when it is a bytes-like payload within the size limit.

    Raises:
        InputError: for a non-bytes value or one over ``max_bytes``.
    """
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InputError(f"value of type {type(value).__name__} is not bytes; serialise it first")
    data = bytes(value)
    if len(data) > max_bytes:
        raise InputError(f"payload of {len(data):,} bytes is over the {max_bytes:,}-byte limit; "
                         "split it or store it in the cold tier")
    return data


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


def validate_embeddings(vectors: object, dim: int) -> np.ndarray:
    """Return ``vectors`` as a C-contiguous float32 array of shape (n, dim).

    Raises:
        InputError: for a wrong dimension or dtype, NaN or Inf, naming the row.
    """
    try:
        arr = np.asarray(vectors)
    except (ValueError, TypeError) as exc:
        raise InputError(f"embeddings are not a numeric array ({exc}); pass an (n, {dim}) array") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InputError(f"embeddings have shape {arr.shape}; expected (n, {dim}) for this collection")
    if arr.dtype.kind not in "fiu" or arr.dtype == np.float16:
        raise InputError(f"embeddings have dtype {arr.dtype}; use float32 or float64")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"embedding row {row} contains NaN or Inf; clean it before writing "
                         "(nothing was written)")
    return arr


@dataclass(frozen=True)
class SearchHit:
    """One ANN search result."""

    id: str
    distance: float
    attrs: Mapping[str, Any] = field(default_factory=dict)


class Tier(ABC):
    """What every tier backend shares: its region, its residency guard, its lifecycle.

    Args:
        region: the region this backend's data lives in.
        residency: the policy every write is checked against (None only in unit tests of
            code that never writes personal data).
    """

    tier: TierName

    def __init__(self, region: str, residency: ResidencyPolicy | None) -> None:
        self.region = region
        self.residency = residency

    def guard_write(self, keys: Sequence[DataKey]) -> None:
        """Check residency for every key before a write; raises, and nothing is written."""
        for key in keys:
            if key.jurisdiction is None:
                continue
            if self.residency is None:
                raise ConfigError(f"{type(self).__name__} in '{self.region}' has no residency "
                                  f"policy, so it may not store personal data ({key})")
            self.residency.check(key.jurisdiction, key.data_class, self.region, "store")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files. Safe to call twice."""

    def __enter__(self) -> Tier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HotStore(Tier):
    """Key -> bytes with optional TTL: the hot tier (Redis)."""

    tier: TierName = "hot"

    @abstractmethod
    def get(self, key: DataKey) -> bytes | None:
        """The value, or None when absent or expired."""

    @abstractmethod
    def get_many(self, keys: Sequence[DataKey]) -> list[bytes | None]:
        """Values in the order of ``keys`` (None for absent), batched per node."""

    @abstractmethod
    def put(self, key: DataKey, value: bytes, ttl_s: float | None = None) -> None:
        """Write one value (residency and size checked first)."""

    @abstractmethod
    def put_many(self, items: Sequence[tuple[DataKey, bytes]], ttl_s: float | None = None) -> None:
        """Write many values; all are validated before any is written."""

    @abstractmethod
    def delete(self, key: DataKey) -> bool:
        """Delete; True when the key existed."""

    @abstractmethod
    def delete_if_equal(self, key: DataKey, value: bytes) -> bool:
        """Delete ``key`` only while it still holds ``value``, atomically; True when deleted.

        A write that lands between a reader's GET and its delete must survive: demotion
        deletes the hot copy this way, after the cold copy of ``value`` is verified.
        """

    @abstractmethod
    def ttl(self, key: DataKey) -> float | None:
        """Remaining TTL in seconds; None when the key has none or is absent."""

    @abstractmethod
    def key_name(self, key: DataKey) -> str:
        """The backend's name of ``key``
        (:func:`~geoshard.storage.keylayout.hot_key_name` with its namespace and shards).

        Raises:
            InputError: ``key`` is not a DataKey.
        """


def prepare_writes(store: HotStore, items: Sequence[tuple[DataKey, object]],
                   ttl_s: object, *, max_value_bytes: int = MAX_VALUE_BYTES,
                   ) -> tuple[list[tuple[DataKey, bytes]], float | None]:
    """Validate a whole hot-tier write batch before any I/O; one bad item and nothing is written.

    Every hot backend calls this first, so they refuse the same batches with the same
    messages. Checks, in order: every item is a ``(DataKey, bytes-like)`` pair, every
    value is within ``max_value_bytes``, ``ttl_s`` is valid, and the store's region may
    hold every key (:meth:`Tier.guard_write`).

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
        require_data_key(key)
        try:
            data = validate_value(value, max_bytes=max_value_bytes)
        except InputError as exc:
            raise InputError(f"item {i} ({key}): {exc} (nothing was written)") from None
        prepared.append((key, data))
    ttl = validate_ttl_s(ttl_s)
    store.guard_write([k for k, _ in prepared])
    return prepared, ttl


class VectorStore(Tier):
    """Embeddings with scalar attributes and ANN search: the warm tier (Milvus)."""

    tier: TierName = "vector"

    @abstractmethod
    def upsert(self, keys: Sequence[DataKey], vectors: object,
               attrs: Sequence[Mapping[str, Any]] | None = None) -> int:
        """Insert or replace; returns the count written. Validates everything first."""

    @abstractmethod
    def search(self, vector: object, k: int = 10, *, filter: str | None = None,
               partition: str | None = None) -> list[SearchHit]:
        """The ``k`` nearest stored vectors, optionally filtered by attributes."""

    @abstractmethod
    def delete(self, keys: Sequence[DataKey]) -> int:
        """Delete by key; returns how many were deleted."""


class ColdStore(Tier):
    """Append-only records in a partitioned dataset: the cold tier (Parquet)."""

    tier: TierName = "cold"

    @abstractmethod
    def append(self, records: Sequence[tuple[DataKey, bytes]], *, date: str) -> int:
        """Append records atomically (all or nothing); returns the count."""

    @abstractmethod
    def read(self, key: DataKey) -> bytes | None:
        """The newest value written for ``key``, or None."""

    @abstractmethod
    def scan(self, data_class: str, *, date: str | None = None) -> list[tuple[str, bytes]]:
        """Every (owner, value) of a class in this region, optionally for one date."""


class Catalog(Tier):
    """Regions, nodes, shards, placements, tier membership and residency audit events."""

    tier: TierName = "catalog"


def finite(x: float) -> bool:
    """True for a finite float (not NaN, not +-Inf)."""
    return isinstance(x, (int, float)) and math.isfinite(x)
