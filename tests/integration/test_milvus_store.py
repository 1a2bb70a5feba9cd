"""Milvus Lite warm tier: search, filters, partitions, delete, recall, bad input, the lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from geoshard.errors import BackendError, ConfigError, InputError, ResidencyError
from geoshard.keys import DataKey, UserKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import load_spec
from geoshard.storage.milvus_store import (
    MilvusIndexConfig,
    MilvusVectorStore,
    MilvusVectorStoreConfig,
    open_lite_paths,
)

pytestmark = pytest.mark.integration
DIM = 16
CATS = ("books", "fashion", "electronics")


@pytest.fixture(scope="module")
def policy(repo_root: Path) -> ResidencyPolicy:
    return ResidencyPolicy.from_spec(load_spec(repo_root / "examples" / "local.yaml"))


@pytest.fixture(scope="module")
def lite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("milvus")


@pytest.fixture(scope="module")
def cfg(lite_dir: Path) -> MilvusVectorStoreConfig:
    return MilvusVectorStoreConfig(
        uri=str(lite_dir / "milvus.db"),
        dim=DIM,
        metric="L2",
        index=MilvusIndexConfig(type="FLAT", params={}, search_params={}),
    )


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(600, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def store(
    cfg: MilvusVectorStoreConfig, policy: ResidencyPolicy, data: np.ndarray
) -> Iterator[MilvusVectorStore]:
    s = MilvusVectorStore(cfg, "eu-west", policy)
    keys = [DataKey("item_embeddings", f"sku-{i}") for i in range(len(data))]
    attrs = [{"category": CATS[i % 3], "price": float(i % 50)} for i in range(len(data))]
    assert s.upsert(keys, data, attrs) == len(data)
    yield s
    s.close()


def _item(i: int) -> DataKey:
    return DataKey("item_embeddings", f"sku-{i}")


def test_search_matches_exact_numpy_l2(store: MilvusVectorStore, data: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    for q in rng.normal(size=(5, DIM)).astype(np.float32):
        hits = store.search(q, k=10)
        exact = np.argsort(((data - q) ** 2).sum(axis=1))[:10]
        assert [h.id for h in hits] == [f"sku-{i}" for i in exact]
        assert hits[0].attrs["data_class"] == "item_embeddings"


def test_partition_and_filter_restrict_hits(store: MilvusVectorStore, data: np.ndarray) -> None:
    hits = store.search(data[3], k=20, partition="books", filter="price < 10")
    assert hits and all(h.attrs["category"] == "books" and h.attrs["price"] < 10 for h in hits)
    ok = [i for i in range(len(data)) if CATS[i % 3] == "books" and i % 50 < 10]
    exact = sorted(ok, key=lambda i: float(((data[i] - data[3]) ** 2).sum()))[:20]
    assert [h.id for h in hits] == [f"sku-{i}" for i in exact]


def test_bad_filter_is_a_backend_error_naming_it(
    store: MilvusVectorStore, data: np.ndarray
) -> None:
    with pytest.raises(BackendError, match="filter expression"):
        store.search(data[0], k=3, filter="price <<< 3")


def test_upsert_replaces_and_delete_counts_existing(store: MilvusVectorStore) -> None:
    before = store.count()
    v = np.full((1, DIM), 9.0, dtype=np.float32)
    store.upsert([_item(0)], v, [{"category": "books"}])
    assert store.count() == before
    np.testing.assert_allclose(store.get([_item(0)])[_item(0)], v[0])
    assert store.delete([_item(0), DataKey("item_embeddings", "never-there")]) == 1
    assert store.count() == before - 1
    assert store.get([_item(0)]) == {}


_GOOD = np.zeros((1, DIM), dtype=np.float32)


@pytest.mark.parametrize(
    ("vectors", "match"),
    [
        (np.vstack([_GOOD, np.full((1, DIM), np.nan)]), "embedding row 1 contains NaN or Inf"),
        (np.vstack([_GOOD, np.full((1, DIM), np.inf)]), "embedding row 1 contains NaN or Inf"),
        (np.zeros((2, DIM + 1)), r"expected \(n, 16\)"),
        (np.zeros((2, DIM), dtype=np.float16), "dtype float16"),
        (np.array([["a"] * DIM] * 2), "dtype <U1"),
        (np.zeros((3, DIM)), "2 keys but 3 embeddings"),
    ],
)
def test_bad_embeddings_are_refused_and_nothing_written(
    store: MilvusVectorStore, vectors: object, match: str
) -> None:
    before = store.count()
    with pytest.raises(InputError, match=match):
        store.upsert(
            [DataKey("item_embeddings", "new-1"), DataKey("item_embeddings", "new-2")], vectors
        )
    assert store.count() == before


@pytest.mark.parametrize(
    ("key", "attrs", "match"),
    [
        (DataKey("interactions", UserKey("eu", 1)), None, "does not belong in the vector tier"),
        (DataKey("item_embeddings", "ok"), {"vec": 1}, "attribute name 'vec' is not allowed"),
        (DataKey("item_embeddings", "ok"), {"blob": "x" * 20_000}, "over the 16,384-byte limit"),
        (DataKey("item_embeddings", "ok"), {"category": 3}, "partition attribute 'category'=3"),
    ],
)
def test_bad_keys_and_attributes_are_refused(
    store: MilvusVectorStore, key: DataKey, attrs: dict[str, object] | None, match: str
) -> None:
    before = store.count()
    with pytest.raises(InputError, match=match):
        store.upsert(
            [_item(1), key],
            np.zeros((2, DIM)),
            [{"category": "books"}, attrs] if attrs is not None else None,
        )
    assert store.count() == before


def test_user_embeddings_follow_residency(
    cfg: MilvusVectorStoreConfig, policy: ResidencyPolicy, store: MilvusVectorStore
) -> None:
    us = MilvusVectorStore(cfg, "us-east", policy)
    try:
        with pytest.raises(
            ResidencyError, match="eu user_embeddings may not be stored in 'us-east'"
        ):
            us.upsert([DataKey("user_embeddings", UserKey("eu", 5))], np.ones((1, DIM)))
        assert us.count() == 0
        assert store.upsert([DataKey("user_embeddings", UserKey("eu", 5))], np.ones((1, DIM))) == 1
        hits = store.search(np.ones(DIM), k=1, data_class="user_embeddings")
        assert [h.id for h in hits] == ["eu:5"]
    finally:
        us.close()


def test_one_client_per_path_in_this_process(
    cfg: MilvusVectorStoreConfig, store: MilvusVectorStore
) -> None:
    other = MilvusVectorStore(cfg, "eu-central", None)
    assert other._client is store._client
    assert open_lite_paths().count(str(Path(cfg.uri).resolve())) == 1
    other.close()
    other.close()  # twice is fine
    assert store.count() > 0  # the shared client is still open for the first owner


def test_a_second_process_gets_a_clear_backend_error(
    cfg: MilvusVectorStoreConfig, store: MilvusVectorStore
) -> None:
    code = textwrap.dedent(f"""
        from geoshard.storage.milvus_store import MilvusVectorStore, MilvusVectorStoreConfig
        from geoshard.errors import BackendError
        try:
            MilvusVectorStore(MilvusVectorStoreConfig(uri={cfg.uri!r}, dim={DIM}), "eu-west", None)
        except BackendError as exc:
            print("BackendError:", exc)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert "BackendError:" in out.stdout, out.stderr[-2000:]
    assert "is locked by another process" in out.stdout
    assert "give this one its own uri" in out.stdout


def test_lock_is_released_when_the_last_owner_closes(tmp_path: Path) -> None:
    cfg = MilvusVectorStoreConfig(uri=str(tmp_path / "m.db"), dim=4)
    s = MilvusVectorStore(cfg, "eu-west", None)
    s.upsert([_item(1)], np.ones((1, 4)))
    s.close()
    code = (
        "from geoshard.storage.milvus_store import *\n"
        f"s = MilvusVectorStore(MilvusVectorStoreConfig(uri={cfg.uri!r}, dim=4), 'eu-west', None)\n"
        "print('count', s.count())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert "count 1" in out.stdout, out.stderr[-2000:]


def test_unknown_lite_index_type_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="index type 'DISKANN' is not built by Milvus Lite"):
        MilvusVectorStore(
            MilvusVectorStoreConfig(
                uri=str(tmp_path / "x.db"), dim=4, index=MilvusIndexConfig(type="DISKANN")
            ),
            "eu-west",
            None,
        )
