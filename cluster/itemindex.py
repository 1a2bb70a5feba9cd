"""A snapshot of a region's item embeddings, per item-attribute shard, for the recall stage.

The warm tier of record is Milvus (one collection per region, partitioned by the item
attribute). Milvus Lite 3.2, though, costs time linear in the collection on every
search (its per-query de-duplication runs in Python: about 0.3 s per search over 100k
items on the reference machine, measured in docs/deploy.md), far over the recall
budget. So the region worker exports the items from Milvus into this snapshot
(:func:`export_snapshot`), and every API process memory-maps it and answers the
nearest-neighbour queries of the recall stage exactly, per item shard, in NumPy
(:meth:`ItemIndex.search`). With ``deploy.recall: milvus`` the pipeline searches Milvus
instead (a Milvus server).

Layout of a snapshot directory ``items/<version>/``: ``vectors.npy`` (float32, unit
length rows, memory-mapped), ``meta.npz`` (ids, shard codes, categories, popularity,
creation times, availability in the region); ``items/current`` names the live version.

Examples:
    >>> idx = ItemIndex.load(Path("regions/eu-west/items"))        # doctest: +SKIP
    >>> rows, sims = idx.search(user_vec, k=100, shard=0)          # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geoshard.errors import BackendError, InputError
from geoshard.shards import ItemShardMap
from geoshard.storage.base import VectorStore

__all__ = ["ItemIndex", "current_version", "export_snapshot"]


@dataclass
class ItemIndex:
    """Item embeddings of one region, with the attributes the pipeline needs.

    Attributes:
        version: the snapshot's version.
        ids: item ids.
        vectors: (n, dim) float32 rows of unit length.
        shard: per item, the index of its shard in ``shard_names``.
        shard_names: the item shards (``shards.items`` of the spec).
        category: per item, the value of the sharding attribute.
        popularity: per item, a popularity score (higher is more popular).
        created_s: per item, its creation time (unix seconds).
        available: per item, whether it may be sold in this region.
    """

    version: str
    ids: np.ndarray
    vectors: np.ndarray
    shard: np.ndarray
    shard_names: list[str]
    category: np.ndarray
    popularity: np.ndarray
    created_s: np.ndarray
    available: np.ndarray
    pos: dict[str, int] = field(default_factory=dict)
    _by_shard: list[np.ndarray] = field(default_factory=list)
    _shard_vectors: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pos = {str(i): n for n, i in enumerate(self.ids.tolist())}
        self._by_shard = [np.flatnonzero(self.shard == s) for s in range(len(self.shard_names))]
        # each shard's rows as one contiguous in-memory matrix: a query is then one
        # matrix-vector product, not a gather from the memory-mapped file
        self._shard_vectors = [
            np.ascontiguousarray(self.vectors[rows], dtype=np.float32) for rows in self._by_shard
        ]
        self.categories = sorted({str(c) for c in self.category.tolist()})

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls, shard_names: list[str], dim: int) -> ItemIndex:
        """An index with no item (before the first export)."""
        return cls(
            "none",
            np.array([], dtype=object),
            np.zeros((0, dim), np.float32),
            np.zeros(0, np.int16),
            shard_names,
            np.array([], dtype=object),
            np.zeros(0, np.float32),
            np.zeros(0, np.float64),
            np.zeros(0, bool),
        )

    def rows_of_shard(self, shard: int) -> np.ndarray:
        """Row numbers of one shard's items."""
        return self._by_shard[shard]

    def search(
        self, query: np.ndarray, k: int, shard: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` rows most similar to ``query`` (cosine), within one shard or all.

        Returns:
            ``(rows, similarities)``, most similar first.
        """
        q = np.asarray(query, dtype=np.float32).ravel()
        n = float(np.linalg.norm(q))
        if n == 0 or not np.isfinite(n):
            raise InputError("the query embedding is zero or not finite; give a real vector")
        q = q / n
        if shard is not None:
            rows, mat = self._by_shard[shard], self._shard_vectors[shard]
        else:
            rows, mat = np.arange(len(self.ids)), np.asarray(self.vectors)
        if not len(rows):
            return rows, np.zeros(0, np.float32)
        sims = mat @ q
        kk = min(k, len(rows))
        top = np.argpartition(-sims, kk - 1)[:kk]
        top = top[np.argsort(-sims[top], kind="stable")]
        return rows[top], sims[top]

    @classmethod
    def load(cls, root: Path) -> ItemIndex | None:
        """The live snapshot under ``root`` (``items/``), or None when there is none."""
        version = current_version(root)
        if version is None:
            return None
        d = root / version
        try:
            vectors = np.load(d / "vectors.npy", mmap_mode="r")
            with np.load(d / "meta.npz", allow_pickle=False) as m:
                meta = {k: m[k] for k in m.files}
            names = json.loads((d / "shards.json").read_text())
        except (OSError, ValueError) as exc:
            raise BackendError(
                f"item snapshot {d} is unreadable: {exc}; the worker exports "
                "a new one on the next item change"
            ) from None
        return cls(
            version,
            meta["ids"].astype(object),
            vectors,
            meta["shard"],
            names,
            meta["category"].astype(object),
            meta["popularity"],
            meta["created_s"],
            meta["available"],
        )


def current_version(root: Path) -> str | None:
    """The version ``items/current`` names, or None."""
    try:
        v = (root / "current").read_text().strip()
    except OSError:
        return None
    return v or None


def export_snapshot(
    vector: VectorStore,
    shards: ItemShardMap,
    region: str,
    root: Path,
    version: str,
    *,
    keep: int = 2,
) -> int:
    """Export ``region``'s item embeddings from the warm tier into a new snapshot.

    Items carry their attributes as written by ``geoshard seed`` (the sharding attribute,
    ``popularity``, ``created_s``, ``available_in``: comma-separated regions, empty for
    everywhere). The new version becomes live by an atomic rename of ``current``; older
    versions beyond ``keep`` are removed.

    Returns:
        How many items the snapshot holds.
    """
    ids: list[str] = []
    vecs: list[np.ndarray] = []
    shard_codes: list[int] = []
    cats: list[str] = []
    pop: list[float] = []
    created: list[float] = []
    avail: list[bool] = []
    names = list(shards.shards)
    code = {n: i for i, n in enumerate(names)}
    attr = shards.attribute
    for owner, vec, attrs in vector.scan("item_embeddings"):
        ids.append(owner)
        vecs.append(vec)
        cats.append(str(attrs.get(attr, "")))
        shard_codes.append(code[shards.shard_for(attrs)])
        pop.append(float(attrs.get("popularity", 0.0) or 0.0))
        created.append(float(attrs.get("created_s", 0.0) or 0.0))
        where = str(attrs.get("available_in", "") or "")
        avail.append(not where or region in where.split(","))
    dim = int(getattr(getattr(vector, "config", None), "dim", 0) or (len(vecs[0]) if vecs else 1))
    raw = np.vstack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    mat = (raw / np.where(norms == 0, 1.0, norms)).astype(np.float32)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    np.save(tmp / "vectors.npy", mat)
    np.savez(
        tmp / "meta.npz",
        ids=np.array(ids, dtype=str),
        shard=np.array(shard_codes, np.int16),
        category=np.array(cats, dtype=str),
        popularity=np.array(pop, np.float32),
        created_s=np.array(created, np.float64),
        available=np.array(avail, bool),
    )
    (tmp / "shards.json").write_text(json.dumps(names))
    final = root / version
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    ptr = root / ".current.tmp"
    ptr.write_text(version)
    os.replace(ptr, root / "current")
    old = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
    )
    for p in old[:-keep]:
        if p.name != version:
            shutil.rmtree(p, ignore_errors=True)
    return len(ids)
