"""Tier movement on real stores: Redis hot tier, Parquet cold tier, Milvus Lite warm tier."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from geoshard.cluster.local.redis_procs import RedisServer
from geoshard.errors import BackendError, InputError, ResidencyError
from geoshard.keys import DataKey, UserKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import load_spec
from geoshard.storage.catalog import SqlCatalog, SqlCatalogConfig
from geoshard.storage.milvus_store import (
    MilvusIndexConfig,
    MilvusVectorStore,
    MilvusVectorStoreConfig,
)
from geoshard.storage.parquet_store import ParquetColdStore, ParquetColdStoreConfig
from geoshard.storage.redis_store import RedisHotStore, RedisHotStoreConfig
from geoshard.storage.tiering import TieringPolicy, TierManager, decode_embedding, encode_embedding

pytestmark = pytest.mark.integration
T0 = 1_714_550_400.0  # 2024-05-01T08:00:00Z


@pytest.fixture(scope="module")
def policy(repo_root: Path) -> ResidencyPolicy:
    return ResidencyPolicy.from_spec(load_spec(repo_root / "examples" / "local.yaml"))


@pytest.fixture
def hot(redis_server: RedisServer, policy: ResidencyPolicy) -> RedisHotStore:
    url = redis_server.url
    return RedisHotStore(
        RedisHotStoreConfig(url=url, namespace=f"t{uuid.uuid4().hex[:8]}"),
        region="eu-west",
        residency=policy,
    )


@pytest.fixture
def cold(tmp_path: Path, policy: ResidencyPolicy) -> ParquetColdStore:
    return ParquetColdStore(ParquetColdStoreConfig(root=str(tmp_path / "cold")), "eu-west", policy)


def _keys(n: int) -> list[DataKey]:
    return [DataKey("user_features", UserKey("eu", i)) for i in range(n)]


def test_demote_writes_cold_then_deletes_hot(hot: RedisHotStore, cold: ParquetColdStore) -> None:
    keys = _keys(30)
    hot.put_many([(k, f"v{i}".encode()) for i, k in enumerate(keys)])
    res = TierManager(hot, cold, policy=TieringPolicy(batch_size=7)).demote(
        [*keys, DataKey("user_features", UserKey("eu", 999))], now_s=T0
    )
    assert (res.demoted, res.absent) == (30, 1)
    assert hot.get_many(keys) == [None] * 30
    assert cold.read_many(keys) == [f"v{i}".encode() for i in range(30)]
    assert cold.files()[0].count("/date=2024-05-01/")


def test_a_bad_cold_copy_keeps_the_hot_one(hot: RedisHotStore, cold: ParquetColdStore) -> None:
    class Lossy(ParquetColdStore):
        def read_many(self, keys: Sequence[DataKey]) -> list[bytes | None]:
            return [None for _ in keys]

    lossy = Lossy(cold.config, "eu-west", cold.residency)
    k = _keys(1)[0]
    hot.put(k, b"precious")
    with pytest.raises(BackendError, match="did not read back equal; the hot copy is kept"):
        TierManager(hot, lossy).demote([k], now_s=T0)
    assert hot.get(k) == b"precious"


def test_demotion_to_a_forbidden_region_moves_nothing(
    hot: RedisHotStore, tmp_path: Path, policy: ResidencyPolicy
) -> None:
    us_cold = ParquetColdStore(ParquetColdStoreConfig(root=str(tmp_path / "us")), "us-east", policy)
    k = _keys(1)[0]
    hot.put(k, b"eu-only")
    with pytest.raises(ResidencyError, match="may not be stored in 'us-east'"):
        TierManager(hot, us_cold).demote([k], now_s=T0)
    assert hot.get(k) == b"eu-only" and us_cold.files() == []


def test_read_through_promotes_after_min_access_count(
    hot: RedisHotStore, cold: ParquetColdStore, tmp_path: Path, policy: ResidencyPolicy
) -> None:
    cat = SqlCatalog(SqlCatalogConfig(url=f"sqlite:///{tmp_path / 'c.db'}"), "eu-west", policy)
    mgr = TierManager(
        hot, cold, catalog=cat, policy=TieringPolicy(min_access_count=2, hot_ttl_s=600)
    )
    k = _keys(1)[0]
    cold.append([(k, b"from-cold")], date="2024-05-01")
    assert mgr.get(k, now_s=T0) == b"from-cold"
    assert hot.get(k) is None  # one read is not enough
    assert mgr.get(k, now_s=T0 + 1) == b"from-cold"
    assert hot.get(k) == b"from-cold"
    ttl = hot.ttl(k)
    assert ttl is not None and 0 < ttl <= 600
    m = cat.membership(k)
    assert m is not None and (m.tier, m.access_count) == ("hot", 2)
    assert mgr.get(_keys(2)[1], now_s=T0) is None
    cat.close()


def test_a_write_during_demotion_stays_hot_and_stays_a_hot_member(
    hot: RedisHotStore, cold: ParquetColdStore, tmp_path: Path, policy: ResidencyPolicy
) -> None:
    cat = SqlCatalog(SqlCatalogConfig(url=f"sqlite:///{tmp_path / 'c.db'}"), "eu-west", policy)
    mgr = TierManager(hot, cold, catalog=cat, policy=TieringPolicy(max_idle_s=100))
    rewritten, quiet = _keys(2)
    for k in (rewritten, quiet):
        hot.put(k, b"old")
        cat.record_access(k, "hot", now_s=T0)

    def write_between_the_steps(_: Sequence[DataKey]) -> None:
        hot.put(rewritten, b"new")  # after the cold copy of b"old", before the hot delete

    res = mgr.demote([rewritten, quiet], now_s=T0 + 200, on_cold_written=write_between_the_steps)
    assert (res.demoted, res.kept, res.absent) == (1, 1, 0)
    assert hot.get(rewritten) == b"new" and hot.get(quiet) is None
    # the kept key is still a hot member, so a later sweep finds it and demotes the new value
    assert [m.key for m in cat.members("hot")] == [str(rewritten)]
    assert [m.key for m in cat.members("cold")] == [str(quiet)]
    assert mgr.sweep(now_s=T0 + 400).demoted == 1
    assert hot.get(rewritten) is None and cold.read(rewritten) == b"new"
    cat.close()


def test_sweep_demotes_only_idle_keys(
    hot: RedisHotStore, cold: ParquetColdStore, tmp_path: Path, policy: ResidencyPolicy
) -> None:
    cat = SqlCatalog(SqlCatalogConfig(url=f"sqlite:///{tmp_path / 'c.db'}"), "eu-west", policy)
    mgr = TierManager(hot, cold, catalog=cat, policy=TieringPolicy(max_idle_s=100))
    idle, busy = _keys(2)
    for k, t in ((idle, T0), (busy, T0 + 150)):
        hot.put(k, str(k).encode())
        cat.record_access(k, "hot", now_s=t)
    assert mgr.sweep(now_s=T0 + 200).demoted == 1
    assert hot.get(idle) is None and cold.read(idle) == str(idle).encode()
    assert hot.get(busy) is not None and cold.read(busy) is None
    assert [m.key for m in cat.members("cold")] == [str(idle)]
    with pytest.raises(InputError, match="sweep needs a catalog"):
        TierManager(hot, cold).sweep(now_s=T0)
    cat.close()


def test_backfill_warm_from_cold(
    cold: ParquetColdStore, hot: RedisHotStore, tmp_path: Path, policy: ResidencyPolicy
) -> None:
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(50, 8)).astype(np.float32)
    items = [DataKey("item_embeddings", f"sku-{i}") for i in range(50)]
    cold.append(
        [(k, encode_embedding(v, {"category": "books"})) for k, v in zip(items, vecs, strict=True)],
        date="2024-05-01",
    )
    cold.append([(items[0], encode_embedding(vecs[1], {"category": "fashion"}))], date="2024-05-02")
    warm = MilvusVectorStore(
        MilvusVectorStoreConfig(
            uri=str(tmp_path / "m.db"),
            dim=8,
            metric="L2",
            index=MilvusIndexConfig(type="FLAT", params={}, search_params={}),
        ),
        "eu-west",
        policy,
    )
    try:
        assert TierManager(hot, cold, warm=warm).backfill_warm("item_embeddings") == 50
        assert warm.count() == 50
        hits = warm.search(vecs[1], k=2)
        assert {h.id for h in hits} == {"sku-0", "sku-1"}  # sku-0 now holds vecs[1]
        assert [h.attrs["category"] for h in warm.search(vecs[1], k=1, partition="fashion")] == [
            "fashion"
        ]
        v, attrs = decode_embedding(encode_embedding(vecs[2], {"a": 1}))
        np.testing.assert_array_equal(v, vecs[2])
        assert attrs == {"a": 1}
    finally:
        warm.close()
