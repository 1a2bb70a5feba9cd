"""The warm tier on Milvus: item and user embeddings with attributes, ANN search.

One :class:`MilvusVectorStore` serves one region and owns one collection,
``<prefix>_<region>`` (``-`` becomes ``_``). Rows are keyed by the :class:`DataKey` text
(``item_embeddings:sku-1``, ``user_embeddings:eu:42``; both names come from
:mod:`geoshard.storage.keylayout`) and carry the data class, the
owner, an item attribute that is the collection's **partition key** (``category`` by
default, so a search filtered on it only touches that partition) and any further
scalar attributes as dynamic fields.

Milvus Lite (the default, ``uri="<dir>/milvus.db"``) runs inside this process and allows
**one process per data directory** (a file lock). geoshard therefore keeps a
process-level registry of open Lite clients keyed by the absolute path: every store on
the same path in this process shares one client, the last :meth:`close` releases the
lock, and opening a path that another process holds raises :class:`BackendError` at
once with the holder's path and the fix. A server URI (``http://host:19530``) goes to a
Milvus server instead; there is no lock then.

Examples:
    >>> cfg = MilvusVectorStoreConfig(uri="/tmp/gs/milvus.db", dim=64)      # doctest: +SKIP
    >>> store = MilvusVectorStore(cfg, "eu-west", policy)                    # doctest: +SKIP
    >>> store.upsert([DataKey("item_embeddings", "sku-1")], vec, [{"category": "books"}])  # doctest: +SKIP
    1
    >>> store.search(vec[0], k=5, partition="books")[0].id                  # doctest: +SKIP
    'sku-1'
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from geoshard.errors import BackendError, ConfigError, InputError
from geoshard.keys import DataKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.storage.base import BackendConfig, SearchHit, VectorStore, validate_embeddings
from geoshard.storage.keylayout import key_text, require_data_key, vector_collection

__all__ = [
    "LITE_INDEX_TYPES",
    "VECTOR_CLASSES",
    "MilvusIndexConfig",
    "MilvusVectorStore",
    "MilvusVectorStoreConfig",
    "open_lite_paths",
]

#: Data classes the warm tier holds.
VECTOR_CLASSES: tuple[str, ...] = ("item_embeddings", "user_embeddings")
#: Vector index types Milvus Lite 3.x builds (FLAT is brute force; AUTOINDEX is HNSW).
LITE_INDEX_TYPES: tuple[str, ...] = (
    "FLAT",
    "BRUTE_FORCE",
    "IVF_FLAT",
    "IVF_SQ8",
    "HNSW",
    "HNSW_SQ",
    "AUTOINDEX",
)
#: Milvus' own limit on the vector dimension.
MAX_DIM = 32_768
#: Largest JSON size of one row's extra attributes.
MAX_ATTR_BYTES = 16_384
_ATTR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_RESERVED = frozenset({"pk", "data_class", "owner", "vec"})
_SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")


def _params(**kw: float | str) -> dict[str, int | float | str]:
    return dict(kw)


class MilvusIndexConfig(BaseModel):
    """The vector index: type, metric-independent build params and search params.

    The defaults (HNSW, M=16, efConstruction=200, ef=128) give recall@10 above 0.95 on
    100k random 64-d vectors (``benchmarks/bench_warm.py``).
    """

    model_config = ConfigDict(extra="forbid")
    type: str = Field(
        default="HNSW", description="FLAT, IVF_FLAT, IVF_SQ8, HNSW, HNSW_SQ, AUTOINDEX"
    )
    params: dict[str, int | float | str] = Field(
        default_factory=lambda: _params(M=16, efConstruction=200)
    )
    search_params: dict[str, int | float | str] = Field(default_factory=lambda: _params(ef=128))


class MilvusVectorStoreConfig(BackendConfig):
    """Config of the Milvus warm tier (``type: milvus``).

    Attributes:
        uri: a local ``.db`` path (Milvus Lite, the default) or a server URI.
        dim: the embedding dimension (1..32768).
        metric: COSINE and IP rank larger distances first; L2 smaller first.
        index: the vector index settings.
        partition_key: the item attribute that partitions each collection.
        collection_prefix: collection names are ``<prefix>_<region>``.
        token: credentials for a server URI (``user:password``); ignored by Lite.
    """

    type: Literal["milvus"] = "milvus"
    uri: str = "milvus.db"
    dim: int = Field(gt=0, le=MAX_DIM)
    metric: Literal["COSINE", "L2", "IP"] = "COSINE"
    index: MilvusIndexConfig = Field(default_factory=MilvusIndexConfig)
    partition_key: str = Field(default="category", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    collection_prefix: str = Field(default="geoshard", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    token: str | None = None

    @property
    def is_lite(self) -> bool:
        """True when ``uri`` is a local Milvus Lite path."""
        return not self.uri.startswith(_SERVER_SCHEMES)


# --------------------------------------------------------------------------- Lite registry


@dataclass
class _LiteEntry:
    client: Any
    refs: int


_REGISTRY: dict[str, _LiteEntry] = {}
_REGISTRY_LOCK = threading.Lock()


def open_lite_paths() -> list[str]:
    """Absolute paths of the Milvus Lite data dirs this process holds open."""
    with _REGISTRY_LOCK:
        return sorted(_REGISTRY)


def _lock_held_elsewhere(path: str) -> bool:
    """True when another process holds Milvus Lite's lock file in ``path``."""
    lock_file = os.path.join(path, "LOCK")
    if not os.path.exists(lock_file):
        return False
    import fcntl

    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _locked_error(path: str) -> BackendError:
    return BackendError(
        f"Milvus Lite data dir '{path}' is locked by another process (Lite allows one process "
        "per data dir); stop that process, give this one its own uri, or run Milvus Lite in "
        "gRPC server mode and point uri at it"
    )


def _acquire_lite(path: str) -> Any:
    from pymilvus import MilvusClient

    with _REGISTRY_LOCK:
        entry = _REGISTRY.get(path)
        if entry is not None:
            entry.refs += 1
            return entry.client
        if _lock_held_elsewhere(path):
            raise _locked_error(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            client = MilvusClient(uri=path)
        except Exception as exc:  # pymilvus wraps the lock error into a generic one
            if _lock_held_elsewhere(path):
                raise _locked_error(path) from None
            raise BackendError(
                f"cannot open Milvus Lite at '{path}': {exc}; check the path "
                "is a writable directory"
            ) from exc
        _REGISTRY[path] = _LiteEntry(client, 1)
        return client


def _release_lite(path: str) -> None:
    with _REGISTRY_LOCK:
        entry = _REGISTRY.get(path)
        if entry is None:
            return
        entry.refs -= 1
        if entry.refs > 0:
            return
        del _REGISTRY[path]
    try:
        entry.client.close()
    finally:
        # MilvusClient.close() keeps the in-process Lite server (and its lock) alive;
        # release it so another process may open the directory.
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(path)


# --------------------------------------------------------------------------- the store


def _quote(value: str) -> str:
    return json.dumps(value)


class MilvusVectorStore(VectorStore):
    """Embeddings of one region in Milvus (Lite or server).

    Args:
        config: the backend config.
        region: the region whose data this store holds.
        residency: checked before every write of user embeddings (personal data).

    Raises:
        BackendError: when Milvus cannot be opened (for Lite: the data dir is locked by
            another process).
        ConfigError: for an index type Lite does not build.
    """

    config_model: ClassVar[type[BackendConfig]] = MilvusVectorStoreConfig
    config: MilvusVectorStoreConfig

    def __init__(
        self, config: MilvusVectorStoreConfig, region: str, residency: ResidencyPolicy | None
    ) -> None:
        super().__init__(region, residency)
        self.config = config
        self.collection = vector_collection(config.collection_prefix, region)
        self._closed = False
        itype = config.index.type.upper()
        if config.is_lite and itype not in LITE_INDEX_TYPES:
            raise ConfigError(
                f"index type '{config.index.type}' is not built by Milvus Lite; "
                f"use one of {', '.join(LITE_INDEX_TYPES)}"
            )
        if config.is_lite:
            self._path: str | None = os.path.abspath(config.uri)
            self._client = _acquire_lite(self._path)
        else:
            self._path = None
            from pymilvus import MilvusClient

            try:
                self._client = MilvusClient(uri=config.uri, token=config.token or "")
            except Exception as exc:
                raise BackendError(
                    f"cannot reach Milvus at '{config.uri}': {exc}; check the "
                    "server is up and the uri/token are right"
                ) from exc
        try:
            self._ensure_collection()
        except Exception:
            self.close()
            raise

    @classmethod
    def from_config(
        cls, config: MilvusVectorStoreConfig, *, region: str, residency: ResidencyPolicy | None
    ) -> Self:
        """Build a store from its config (the registry's entry point)."""
        return cls(config, region, residency)

    # -- setup --------------------------------------------------------------------
    def _ensure_collection(self) -> None:
        from pymilvus import DataType, MilvusClient

        c = self._client
        if c.has_collection(self.collection):
            c.load_collection(self.collection)
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=256)
        schema.add_field("data_class", DataType.VARCHAR, max_length=32)
        schema.add_field("owner", DataType.VARCHAR, max_length=160)
        schema.add_field(
            self.config.partition_key, DataType.VARCHAR, max_length=128, is_partition_key=True
        )
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=self.config.dim)
        index = c.prepare_index_params()
        index.add_index(
            field_name="vec",
            index_type=self.config.index.type.upper(),
            metric_type=self.config.metric,
            params=dict(self.config.index.params),
        )
        c.create_collection(
            self.collection, schema=schema, index_params=index, consistency_level="Strong"
        )
        c.load_collection(self.collection)

    def close(self) -> None:
        """Release this store's share of the client (the last one frees Lite's lock)."""
        if self._closed:
            return
        self._closed = True
        if self._path is not None:
            _release_lite(self._path)
        else:
            self._client.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"the Milvus store of '{self.region}' is closed; open a new one")

    # -- validation ---------------------------------------------------------------
    def _row_key(self, key: DataKey) -> str:
        if require_data_key(key).data_class not in VECTOR_CLASSES:
            raise InputError(
                f"data class '{key.data_class}' does not belong in the vector tier; "
                f"use one of {', '.join(VECTOR_CLASSES)}"
            )
        return key_text(key)

    def _row_attrs(self, attrs: Mapping[str, Any] | None) -> dict[str, Any]:
        if attrs is None:
            return {self.config.partition_key: ""}
        if not isinstance(attrs, Mapping):
            raise InputError(f"attributes {attrs!r} must be a mapping of name -> scalar")
        out: dict[str, Any] = {}
        for name, value in attrs.items():
            if not isinstance(name, str) or not _ATTR_NAME.match(name) or name in _RESERVED:
                raise InputError(
                    f"attribute name {name!r} is not allowed; use letters, digits and "
                    f"'_' (not {', '.join(sorted(_RESERVED))})"
                )
            if isinstance(value, float) and not np.isfinite(value):
                raise InputError(f"attribute '{name}' is {value}; store a finite number")
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise InputError(
                    f"attribute '{name}' has type {type(value).__name__}; "
                    "use str, int, float or bool"
                )
            out[name] = value
        part = out.get(self.config.partition_key, "")
        if not isinstance(part, str) or len(part) > 128:
            raise InputError(
                f"partition attribute '{self.config.partition_key}'={part!r} must be a "
                "string of at most 128 characters"
            )
        out[self.config.partition_key] = part
        size = len(json.dumps(out))
        if size > MAX_ATTR_BYTES:
            raise InputError(
                f"attributes of {size:,} bytes are over the {MAX_ATTR_BYTES:,}-byte "
                "limit; keep large payloads in the cold tier"
            )
        return out

    # -- the interface ------------------------------------------------------------
    def upsert(
        self,
        keys: Sequence[DataKey],
        vectors: object,
        attrs: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Insert or replace embeddings; returns the count written.

        Every key, vector, attribute and the residency of every user embedding is checked
        before anything is written, so a bad row leaves the collection unchanged.

        Raises:
            InputError: a bad key, embedding (NaN/Inf, dim, dtype) or attribute.
            ResidencyError: a user embedding whose jurisdiction may not be stored here.
        """
        self._check_open()
        keys = list(keys)
        arr = validate_embeddings(vectors, self.config.dim)
        if arr.shape[0] != len(keys):
            raise InputError(
                f"{len(keys)} keys but {arr.shape[0]} embeddings; pass one row per key"
            )
        if attrs is not None and len(attrs) != len(keys):
            raise InputError(
                f"{len(keys)} keys but {len(attrs)} attribute rows; pass one per key or None"
            )
        pks = [self._row_key(k) for k in keys]
        if len(set(pks)) != len(pks):
            dup = next(p for p in pks if pks.count(p) > 1)
            raise InputError(f"key '{dup}' appears twice in one upsert; pass each key once")
        rows_attrs = [
            self._row_attrs(attrs[i] if attrs is not None else None) for i in range(len(keys))
        ]
        self.guard_write(keys)
        if not keys:
            return 0
        rows = [
            {
                "pk": pk,
                "data_class": k.data_class,
                "owner": str(k.owner),
                **a,
                "vec": arr[i].tolist(),
            }
            for i, (pk, k, a) in enumerate(zip(pks, keys, rows_attrs, strict=True))
        ]
        try:
            for start in range(0, len(rows), 2000):
                self._client.upsert(self.collection, rows[start : start + 2000])
        except Exception as exc:
            raise BackendError(f"Milvus upsert into '{self.collection}' failed: {exc}") from exc
        return len(rows)

    def search(
        self,
        vector: object,
        k: int = 10,
        *,
        filter: str | None = None,
        partition: str | None = None,
        data_class: str | None = None,
    ) -> list[SearchHit]:
        """The ``k`` nearest stored embeddings.

        Args:
            vector: one query embedding of the collection's dimension.
            k: how many hits (1..16384).
            filter: a Milvus boolean expression on attributes, e.g. ``price < 10``.
            partition: a value of the partition-key attribute (e.g. a category).
            data_class: restrict to ``item_embeddings`` or ``user_embeddings``.

        Returns:
            Hits nearest first; ``id`` is the owner (item id or user key text), ``attrs``
            holds the data class and every stored attribute.
        """
        self._check_open()
        q = validate_embeddings(vector, self.config.dim)
        if q.shape[0] != 1:
            raise InputError(f"search takes one query embedding; got {q.shape[0]}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 16_384:
            raise InputError(f"k={k!r} must be an integer in [1, 16384]")
        clauses = []
        if filter:
            clauses.append(f"({filter})")
        if partition is not None:
            clauses.append(f"{self.config.partition_key} == {_quote(partition)}")
        if data_class is not None:
            if data_class not in VECTOR_CLASSES:
                raise InputError(
                    f"data_class '{data_class}' is not in the vector tier; use one of "
                    f"{', '.join(VECTOR_CLASSES)}"
                )
            clauses.append(f"data_class == {_quote(data_class)}")
        try:
            res = self._client.search(
                self.collection,
                data=[q[0].tolist()],
                limit=k,
                filter=" and ".join(clauses),
                output_fields=["*"],
                search_params={
                    "metric_type": self.config.metric,
                    "params": dict(self.config.index.search_params),
                },
            )
        except Exception as exc:
            raise BackendError(
                f"Milvus search in '{self.collection}' failed: {exc}; check the "
                f"filter expression {filter!r}"
            ) from exc
        hits = []
        for h in res[0]:
            ent = dict(h.get("entity", {}))
            ent.pop("vec", None)
            pk = ent.pop("pk", None)
            owner = str(ent.pop("owner", pk))
            hits.append(SearchHit(id=owner, distance=float(h["distance"]), attrs=ent))
        return hits

    def delete(self, keys: Sequence[DataKey]) -> int:
        """Delete by key; returns how many existed (absent keys are ignored)."""
        self._check_open()
        pks = [self._row_key(k) for k in keys]
        if not pks:
            return 0
        present = self._existing(pks)
        if present:
            self._client.delete(self.collection, ids=sorted(present))
        return len(present)

    # -- extras -------------------------------------------------------------------
    def _existing(self, pks: Sequence[str]) -> set[str]:
        out: set[str] = set()
        for start in range(0, len(pks), 1000):
            chunk = list(pks[start : start + 1000])
            rows = self._client.query(
                self.collection, filter=f"pk in {json.dumps(chunk)}", output_fields=["pk"]
            )
            out.update(r["pk"] for r in rows)
        return out

    def get(self, keys: Sequence[DataKey]) -> dict[DataKey, np.ndarray]:
        """The stored embedding of each present key (absent keys are left out)."""
        self._check_open()
        by_pk = {self._row_key(k): k for k in keys}
        out: dict[DataKey, np.ndarray] = {}
        pks = list(by_pk)
        for start in range(0, len(pks), 1000):
            chunk = pks[start : start + 1000]
            rows = self._client.query(
                self.collection, filter=f"pk in {json.dumps(chunk)}", output_fields=["pk", "vec"]
            )
            for r in rows:
                out[by_pk[r["pk"]]] = np.asarray(r["vec"], dtype=np.float32)
        return out

    def scan(
        self, data_class: str, *, batch_size: int = 5000
    ) -> Iterator[tuple[str, np.ndarray, dict[str, Any]]]:
        """Every embedding of ``data_class`` in this region: ``(owner, vector, attrs)``.

        Pages through the collection with a query iterator (``batch_size`` rows a page).

        Raises:
            InputError: a class the vector tier does not hold.
            BackendError: Milvus failed.
        """
        self._check_open()
        if data_class not in VECTOR_CLASSES:
            raise InputError(
                f"data_class '{data_class}' is not in the vector tier; use one of "
                f"{', '.join(VECTOR_CLASSES)}"
            )
        try:
            it = self._client.query_iterator(
                self.collection,
                batch_size=batch_size,
                filter=f"data_class == {_quote(data_class)}",
                output_fields=["*"],
            )
        except Exception as exc:
            raise BackendError(f"Milvus scan of '{self.collection}' failed: {exc}") from exc
        try:
            while True:
                try:
                    rows = it.next()
                except Exception as exc:
                    raise BackendError(f"Milvus scan of '{self.collection}' failed: {exc}") from exc
                if not rows:
                    return
                for r in rows:
                    ent = dict(r)
                    vec = np.asarray(ent.pop("vec"), dtype=np.float32)
                    ent.pop("pk", None)
                    ent.pop("data_class", None)
                    owner = str(ent.pop("owner"))
                    yield owner, vec, ent
        finally:
            it.close()

    def count(self, data_class: str | None = None) -> int:
        """How many embeddings this region holds (of one class, or all)."""
        self._check_open()
        expr = "" if data_class is None else f"data_class == {_quote(data_class)}"
        rows = self._client.query(self.collection, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0
