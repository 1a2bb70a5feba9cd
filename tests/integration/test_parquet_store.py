"""Parquet cold tier: atomic writes, hidden temp files, compaction, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from geoshard.errors import BackendError, InputError
from geoshard.keys import DataKey, UserKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import load_spec
from geoshard.storage import parquet_store
from geoshard.storage.parquet_store import ParquetColdStore, ParquetColdStoreConfig

pytestmark = pytest.mark.integration


def _k(uid: int, jur: str = "eu") -> DataKey:
    return DataKey("interactions", UserKey(jur, uid))


@pytest.fixture(scope="module")
def policy(repo_root: Path) -> ResidencyPolicy:
    return ResidencyPolicy.from_spec(load_spec(repo_root / "examples" / "local.yaml"))


@pytest.fixture
def store(tmp_path: Path, policy: ResidencyPolicy) -> ParquetColdStore:
    return ParquetColdStore(ParquetColdStoreConfig(root=str(tmp_path), shards=4), "eu-west", policy)


def test_layout_is_hive_partitioned_by_region_class_shard_date(store: ParquetColdStore) -> None:
    store.append([(DataKey("item_catalog", "sku-1"), b"x")], date="2024-05-01")
    (path,) = store.files()
    assert "/region=eu-west/data_class=item_catalog/shard=" in path
    assert "/date=2024-05-01/part-" in path and path.endswith(".parquet")


def test_temp_and_hidden_files_are_never_read(store: ParquetColdStore, tmp_path: Path) -> None:
    store.append([(DataKey("item_catalog", "sku-1"), b"v1")], date="2024-05-01")
    leaf = Path(store.files()[0]).parent
    (leaf / ".part-crashed.parquet.tmp").write_bytes(b"PAR1 half a file")
    (leaf / "_SUCCESS").write_text("")
    assert store.read(DataKey("item_catalog", "sku-1")) == b"v1"
    assert store.scan("item_catalog") == [("sku-1", b"v1")]
    assert len(store.files()) == 1


def test_a_failed_write_leaves_nothing_visible(
    store: ParquetColdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = pq.write_table

    def flaky(*a: object, **kw: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(*a, **kw)

    monkeypatch.setattr(parquet_store.pq, "write_table", flaky)
    records = [(_k(i), b"v") for i in range(20)]  # several shards -> several files
    with pytest.raises(BackendError, match="nothing was written"):
        store.append(records, date="2024-05-01")
    assert store.files() == []
    assert not [p for p in Path(store.base).rglob("*") if p.is_file()]


def test_point_read_returns_the_newest_value(store: ParquetColdStore) -> None:
    for i, d in enumerate(["2024-05-03", "2024-05-01", "2024-05-02"]):
        store.append([(_k(1), f"v{i}".encode())], date=d)
    assert store.read(_k(1)) == b"v2"  # newest write, whatever its date partition
    assert store.read(_k(2)) is None
    assert store.read_many([_k(2), _k(1)]) == [None, b"v2"]


def test_compaction_merges_small_files_and_keeps_every_record(store: ParquetColdStore) -> None:
    for i in range(12):
        store.append([(_k(1), f"a{i}".encode()), (_k(2), f"b{i}".encode())], date="2024-05-01")
    before_scan = store.scan("interactions")
    n_before = len(store.files())
    removed = store.compact()
    assert removed == n_before
    assert len(store.files()) == len({Path(p).parent for p in store.files()}) < n_before
    assert store.scan("interactions") == before_scan
    assert store.read(_k(1)) == b"a11" and store.read(_k(2)) == b"b11"
    assert store.compact() == 0  # nothing left to merge


def test_a_record_seen_twice_mid_compaction_counts_once(store: ParquetColdStore) -> None:
    store.append([(_k(1), b"a")], date="2024-05-01")
    (f,) = store.files()
    shutil.copy(f, str(Path(f).with_name("compact-dup.parquet")))  # merged file, old not yet gone
    assert store.scan("interactions") == [("eu:1", b"a")]
    assert store.compact() == 2 and store.scan("interactions") == [("eu:1", b"a")]


@pytest.mark.parametrize(
    ("records", "date", "match"),
    [
        ([(_k(1), b"x" * 2_000_000)], "2024-05-01", "payload of 2,000,000 bytes is over the"),
        ([(_k(1), 42)], "2024-05-01", "value of type int is not bytes"),
        ([(_k(1), b"x")], "2024-5-1", "date '2024-5-1' is malformed; use 'YYYY-MM-DD'"),
        ([(_k(1), b"x")], "2024-02-30", "not a calendar date"),
    ],
)
def test_bad_input_is_refused_and_nothing_written(
    store: ParquetColdStore, records: list, date: str, match: str
) -> None:
    store.append([(_k(9), b"keep")], date="2024-05-01")
    before = store.files()
    with pytest.raises(InputError, match=match):
        store.append([(_k(3), b"ok"), *records], date=date)
    assert store.files() == before
    assert store.read(_k(3)) is None


def test_unusable_uri_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="cannot open cold-tier root 'nope://x'"):
        ParquetColdStore(ParquetColdStoreConfig(root="nope://x"), "eu-west", None)


def test_reads_during_a_first_write_see_nothing_rather_than_fail(store: ParquetColdStore) -> None:
    """A bucket whose only file is still being written (a hidden temp file) reads as empty."""
    from geoshard.storage.keylayout import cold_bucket, cold_partition

    key = _k(7)
    leaf = Path(store.base) / cold_partition(
        "eu-west", "interactions", bucket=cold_bucket("eu:7", 4), date="2024-05-01"
    )
    leaf.mkdir(parents=True)
    (leaf / ".part-in-progress.parquet.tmp").write_bytes(b"PAR1 partial")
    assert store.read(key) is None
    assert store.history(key) == []
    assert store.scan("interactions") == []
    store.append([(key, b"e1")], date="2024-05-01")
    assert store.history(key) == [b"e1"]
