"""One small interface per storage tier, and the registry that builds a backend by ``type:``.

The model is Feast's online/offline split: each tier is an abstract class with a handful
of methods, each backend is a subclass with a pydantic config whose ``type`` field names
it, and :data:`BACKENDS` maps ``(tier, type)`` to a dotted path, so backends are found
by an explicit registry and never by scanning the package tree. :func:`build_backend`
turns a config (a mapping from YAML, or a config model) into a backend through that
registry and the backend's :meth:`Backend.from_config`.

Every write of a datum goes through :meth:`Tier.guard_write`, which checks residency for
the tier's region *before* anything is written, after the input was validated.

Tiers:
    * :class:`HotStore`: key -> bytes with TTL (Redis).
    * :class:`VectorStore`: embeddings with attributes, ANN search (Milvus).
    * :class:`ColdStore`: append-only partitioned records (Parquet).
    * :class:`Catalog`: regions, nodes, shards, placements, tier membership and residency
      audit events (SQL).

Examples:
    >>> store = build_backend("hot", {"type": "memory", "namespace": "demo"},
    ...                       region="us-east", residency=None)
    >>> type(store).__name__, store.key_name(DataKey("item_catalog", "sku-1"))
    ('MemoryHotStore', 'demo:{sku-1}:item_catalog:sku-1')
"""

from __future__ import annotations

import importlib
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self, overload

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from geoshard.errors import ConfigError, InputError, did_you_mean
from geoshard.keys import DataKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import Spec
from geoshard.storage.keylayout import require_data_key

__all__ = [
    "BACKENDS",
    "MAX_VALUE_BYTES",
    "AuditEvent",
    "Backend",
    "BackendConfig",
    "Catalog",
    "ColdStore",
    "DrainRecord",
    "HotStore",
    "Membership",
    "NodeInfo",
    "PlacementInfo",
    "RegionInfo",
    "SearchHit",
    "Tier",
    "TierName",
    "VectorStore",
    "build_backend",
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


def load_backend(tier: TierName, type_: str) -> type[Backend]:
    """Import the backend class for ``(tier, type_)``.

    Raises:
        ConfigError: for an unknown type, with the closest valid name.
    """
    path = BACKENDS.get((tier, type_))
    if path is None:
        known = sorted(t for (ti, t) in BACKENDS if ti == tier)
        raise ConfigError(
            f"unknown {tier} backend type '{type_}'{did_you_mean(type_, known)}"
            f" (known: {', '.join(known)})"
        )
    module, _, name = path.partition(":")
    cls: type[Backend] = getattr(importlib.import_module(module), name)
    return cls


@overload
def build_backend(
    tier: Literal["hot"],
    config: BackendConfig | Mapping[str, Any],
    *,
    region: str,
    residency: ResidencyPolicy | None,
    **runtime: Any,
) -> HotStore: ...
@overload
def build_backend(
    tier: Literal["vector"],
    config: BackendConfig | Mapping[str, Any],
    *,
    region: str,
    residency: ResidencyPolicy | None,
    **runtime: Any,
) -> VectorStore: ...
@overload
def build_backend(
    tier: Literal["cold"],
    config: BackendConfig | Mapping[str, Any],
    *,
    region: str,
    residency: ResidencyPolicy | None,
    **runtime: Any,
) -> ColdStore: ...
@overload
def build_backend(
    tier: Literal["catalog"],
    config: BackendConfig | Mapping[str, Any],
    *,
    region: str,
    residency: ResidencyPolicy | None,
    **runtime: Any,
) -> Catalog: ...
def build_backend(
    tier: TierName,
    config: BackendConfig | Mapping[str, Any],
    *,
    region: str,
    residency: ResidencyPolicy | None,
    **runtime: Any,
) -> Backend:
    """Build the ``tier`` backend that ``config`` names by its ``type``, through the registry.

    Args:
        tier: ``hot``, ``vector``, ``cold`` or ``catalog``.
        config: a mapping as written in YAML (``{"type": "redis", "url": ...}``), validated
            by the backend's config model, or an instance of that model.
        region: the region the backend's data lives in.
        residency: the policy every write is checked against.
        **runtime: objects a backend's ``from_config`` takes besides its config, which no
            config file can hold: an injected ``clock`` (memory), a pyarrow ``filesystem``
            (parquet), ``shard_of`` or a ``retry`` policy (Redis).

    Raises:
        ConfigError: no or an unknown ``type`` (with the closest valid one), a config that
            does not validate (each problem with its key), a config model of another
            backend, or a runtime argument the backend does not take.
    """
    known = sorted(t for (ti, t) in BACKENDS if ti == tier)
    if isinstance(config, BackendConfig):
        type_ = config.type
    elif isinstance(config, Mapping):
        named = config.get("type")
        if not isinstance(named, str):
            raise ConfigError(
                f"{tier} backend config needs 'type:' naming the backend; "
                f"use one of {', '.join(known)}"
            )
        type_ = named
    else:
        raise ConfigError(
            f"{tier} backend config must be a mapping with 'type:' or a "
            f"backend config model; got {type(config).__name__}"
        )
    cls = load_backend(tier, type_)
    model = cls.config_model
    if isinstance(config, BackendConfig):
        if not isinstance(config, model):
            raise ConfigError(
                f"{tier} backend '{type_}' takes a {model.__name__}; got a {type(config).__name__}"
            )
        parsed = config
    else:
        try:
            parsed = model.model_validate(dict(config))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise ConfigError(
                f"{tier} backend '{type_}' config is invalid: {problems}; "
                f"see {model.__module__}.{model.__name__}"
            ) from None
    takes = [
        name
        for name, p in inspect.signature(cls.from_config).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("region", "residency")
    ]
    for name in runtime:
        if name not in takes:
            raise ConfigError(
                f"{tier} backend '{type_}' takes no runtime argument '{name}'; "
                f"it takes: {', '.join(takes) or 'none'}"
            )
    return cls.from_config(parsed, region=region, residency=residency, **runtime)


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
        raise InputError(
            f"payload of {len(data):,} bytes is over the {max_bytes:,}-byte limit; "
            "split it or store it in the cold tier"
        )
    return data


def validate_ttl_s(ttl_s: object) -> float | None:
    """Return ``ttl_s`` as a float when it is a finite number > 0, or None for no expiry.

    Raises:
        InputError: zero, negative, NaN, infinite or not a number.
    """
    if ttl_s is None:
        return None
    if (
        isinstance(ttl_s, bool)
        or not isinstance(ttl_s, (int, float))
        or not math.isfinite(ttl_s)
        or ttl_s <= 0
    ):
        raise InputError(
            f"ttl_s(={ttl_s!r}) must be a finite number of seconds > 0, or None "
            "for no expiry (nothing was written)"
        )
    return float(ttl_s)


def validate_embeddings(vectors: object, dim: int) -> np.ndarray:
    """Return ``vectors`` as a C-contiguous float32 array of shape (n, dim).

    Raises:
        InputError: for a wrong dimension or dtype, NaN or Inf, naming the row.
    """
    try:
        arr = np.asarray(vectors)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"embeddings are not a numeric array ({exc}); pass an (n, {dim}) array"
        ) from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InputError(
            f"embeddings have shape {arr.shape}; expected (n, {dim}) for this collection"
        )
    if arr.dtype.kind not in "fiu" or arr.dtype == np.float16:
        raise InputError(f"embeddings have dtype {arr.dtype}; use float32 or float64")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"embedding row {row} contains NaN or Inf; clean it before writing "
            "(nothing was written)"
        )
    return arr


@dataclass(frozen=True)
class SearchHit:
    """One ANN search result."""

    id: str
    distance: float
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RegionInfo:
    """A region as the catalog records it."""

    name: str
    jurisdiction: str
    cloud_region: str
    lat: float
    lon: float


@dataclass(frozen=True)
class NodeInfo:
    """A node as the catalog records it."""

    name: str
    region: str
    tier: str
    healthy: bool


@dataclass(frozen=True)
class PlacementInfo:
    """One replica of a shard (rank 0 is the primary)."""

    shard: str
    node: str
    rank: int
    epoch: int


@dataclass(frozen=True)
class Membership:
    """Which tier holds a key, when it was last used and how often."""

    key: str
    data_class: str
    tier: str
    last_access_s: float
    access_count: int


@dataclass(frozen=True)
class DrainRecord:
    """One batch of a region's write log drained into the cold tier.

    Attributes:
        id: the record's id.
        region: the region whose log was drained.
        stream: the log's name (the Redis Stream key).
        first_id: the first log entry of the batch (stream id).
        last_id: the last log entry of the batch (the consumer's new cursor).
        records: how many records went to the cold tier.
        at_s: when (unix seconds).
    """

    id: int
    region: str
    stream: str
    first_id: str
    last_id: str
    records: int
    at_s: float


@dataclass(frozen=True)
class AuditEvent:
    """One recorded residency decision."""

    id: int
    at_s: float
    jurisdiction: str
    data_class: str
    region: str
    purpose: str
    allowed: bool
    action: str
    detail: str


class Tier(ABC):
    """What every tier backend (and every cache level) shares: its region, its residency
    guard, its lifecycle.

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
                raise ConfigError(
                    f"{type(self).__name__} in '{self.region}' has no residency "
                    f"policy, so it may not store personal data ({key})"
                )
            self.residency.check(key.jurisdiction, key.data_class, self.region, "store")

    def close(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Release connections and files. Safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(Tier):
    """A tier backend that the registry builds from its config.

    Attributes:
        config_model: the pydantic config of this backend; its ``type`` default is the
            backend's name in :data:`BACKENDS`.
        config: the config this backend was built with.
    """

    config_model: ClassVar[type[BackendConfig]]
    config: BackendConfig

    @classmethod
    @abstractmethod
    def from_config(cls, config: Any, *, region: str, residency: ResidencyPolicy | None) -> Self:
        """Build the backend from an instance of :attr:`config_model` (the registry's
        entry point; :func:`build_backend` checks the config's type first).

        A backend may take keyword-only runtime arguments after ``residency`` (a clock, a
        filesystem), each with a default.
        """


class HotStore(Backend):
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


def prepare_writes(
    store: HotStore,
    items: Sequence[tuple[DataKey, object]],
    ttl_s: object,
    *,
    max_value_bytes: int = MAX_VALUE_BYTES,
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
        raise InputError(
            f"items must be a sequence of (DataKey, bytes) pairs; got {type(items).__name__}"
        )
    prepared: list[tuple[DataKey, bytes]] = []
    for i, item in enumerate(items):
        if not isinstance(item, tuple) or len(item) != 2:
            raise InputError(
                f"item {i} ({item!r:.60}) is not a (DataKey, bytes) pair (nothing was written)"
            )
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


class VectorStore(Backend):
    """Embeddings with scalar attributes and ANN search: the warm tier (Milvus)."""

    tier: TierName = "vector"

    @abstractmethod
    def upsert(
        self,
        keys: Sequence[DataKey],
        vectors: object,
        attrs: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Insert or replace; returns the count written. Validates everything first."""

    @abstractmethod
    def search(
        self,
        vector: object,
        k: int = 10,
        *,
        filter: str | None = None,
        partition: str | None = None,
    ) -> list[SearchHit]:
        """The ``k`` nearest stored vectors, optionally filtered by attributes."""

    @abstractmethod
    def delete(self, keys: Sequence[DataKey]) -> int:
        """Delete by key; returns how many were deleted."""

    @abstractmethod
    def count(self, data_class: str | None = None) -> int:
        """How many embeddings this region holds (of one class, or all)."""

    @abstractmethod
    def scan(
        self, data_class: str, *, batch_size: int = 5000
    ) -> Iterator[tuple[str, np.ndarray, dict[str, Any]]]:
        """Every stored embedding of ``data_class`` in this region, in batches, in no
        particular order: ``(owner, vector, attributes)``.

        Raises:
            InputError: a class the vector tier does not hold.
        """


class ColdStore(Backend):
    """Append-only records in a partitioned dataset: the cold tier (Parquet)."""

    tier: TierName = "cold"

    @abstractmethod
    def append(self, records: Sequence[tuple[DataKey, bytes]], *, date: str) -> int:
        """Append records atomically (all or nothing); returns the count."""

    @abstractmethod
    def read(self, key: DataKey) -> bytes | None:
        """The newest value written for ``key``, or None."""

    def read_many(self, keys: Sequence[DataKey]) -> list[bytes | None]:
        """The newest value of each key, in order (None for absent).

        One :meth:`read` per key here; a backend overrides it to batch.
        """
        return [self.read(k) for k in keys]

    def history(self, key: DataKey) -> list[bytes]:
        """Every value written for ``key``, oldest first (an append-only log per owner).

        One scan of the key's class here; a backend overrides it to read one bucket.
        """
        owner = str(key.owner)
        return [v for o, v in self.scan(key.data_class) if o == owner]

    @abstractmethod
    def scan(
        self, data_class: str, *, date: str | None = None, latest_only: bool = False
    ) -> list[tuple[str, bytes]]:
        """Every (owner, value) of a class in this region, in write order, optionally for
        one date; with ``latest_only``, the newest value per owner, sorted by owner."""


class Catalog(Backend):
    """Regions, nodes, shards, placements, tier membership and residency audit events.

    Time is always an argument (``now_s``, ``at_s``); a catalog reads no clock.
    """

    tier: TierName = "catalog"

    # -- topology -----------------------------------------------------------------
    @abstractmethod
    def register_spec(self, spec: Spec) -> None:
        """Record (insert or update) every region, hot and warm node and shard of ``spec``."""

    @abstractmethod
    def list_regions(self) -> list[RegionInfo]:
        """Every recorded region, by name."""

    @abstractmethod
    def list_nodes(self, region: str | None = None, tier: str | None = None) -> list[NodeInfo]:
        """Recorded nodes, optionally of one region and/or tier, by name."""

    @abstractmethod
    def set_node_health(self, node: str, healthy: bool) -> None:
        """Mark a node (un)healthy.

        Raises:
            InputError: for an unknown node.
        """

    @abstractmethod
    def record_placement(self, shard: str, nodes: Sequence[str], *, epoch: int) -> None:
        """Replace ``shard``'s placement with ``nodes`` (primary first) at ``epoch``.

        Raises:
            InputError: for an unknown shard or node, or an empty node list.
        """

    @abstractmethod
    def placements(self, shard: str | None = None) -> list[PlacementInfo]:
        """Recorded placements (of one shard, or all), by shard then rank."""

    # -- tier membership ----------------------------------------------------------
    @abstractmethod
    def record_access(self, key: DataKey, tier: str, *, now_s: float, count: bool = True) -> None:
        """Record that ``key`` lives in ``tier`` (``hot``, ``warm`` or ``cold``) and was
        used at ``now_s``; ``count`` adds one to its access count.

        Raises:
            InputError: for an unknown tier or a key that is not a DataKey.
            ResidencyError: a personal key this catalog's region may not store.
        """

    def set_tier(self, key: DataKey, tier: str, *, now_s: float) -> None:
        """Move ``key`` to ``tier`` without counting an access."""
        self.record_access(key, tier, now_s=now_s, count=False)

    @abstractmethod
    def membership(self, key: DataKey) -> Membership | None:
        """The membership row of ``key``, or None."""

    @abstractmethod
    def members(self, tier: str | None = None) -> list[Membership]:
        """Membership rows (of one tier, or all), by key."""

    @abstractmethod
    def forget(self, key: DataKey) -> bool:
        """Drop ``key``'s membership row (erasure); True when it existed."""

    # -- residency audit ----------------------------------------------------------
    @abstractmethod
    def record_audit(
        self,
        *,
        jurisdiction: str,
        data_class: str,
        region: str,
        purpose: str,
        allowed: bool,
        action: str,
        at_s: float,
        detail: str = "",
    ) -> int:
        """Record one residency decision; returns its id. Put no user id in ``detail``.

        Raises:
            InputError: an unknown data class, or a purpose other than store or process.
        """

    # -- drain log ----------------------------------------------------------------
    @abstractmethod
    def record_drain(
        self,
        *,
        region: str,
        stream: str,
        first_id: str,
        last_id: str,
        records: int,
        at_s: float,
    ) -> int:
        """Record that entries ``first_id`` .. ``last_id`` of ``region``'s log ``stream``
        went to the cold tier (``records`` records); returns the record's id.

        Raises:
            InputError: a negative ``records`` or an empty stream id.
        """

    @abstractmethod
    def drains(self, *, region: str | None = None, limit: int | None = None) -> list[DrainRecord]:
        """Recorded drains, oldest first (the newest ``limit`` when given), optionally
        of one region."""

    @abstractmethod
    def audit_events(
        self,
        *,
        jurisdiction: str | None = None,
        region: str | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """Recorded audit events, oldest first, optionally filtered."""
