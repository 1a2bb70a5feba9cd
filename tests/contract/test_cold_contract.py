"""The cold-tier contract, run over every ColdStore backend and filesystem form.

Backends: Parquet on a local directory, Parquet through a ``file://`` URI, and Parquet
on pyarrow's in-memory mock filesystem (through a ``SubTreeFileSystem``). Every store is
built from a config mapping through the ``BACKENDS`` registry (``build_backend``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest

from geoshard.errors import InputError, ResidencyError
from geoshard.keys import DataKey, UserKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import DATA_CLASSES, PERSONAL_CLASSES, load_spec
from geoshard.storage.base import ColdStore, build_backend

Factory = Callable[[str], ColdStore]


@pytest.fixture(scope="module")
def policy(repo_root: Path) -> ResidencyPolicy:
    return ResidencyPolicy.from_spec(load_spec(repo_root / "examples" / "local.yaml"))


@pytest.fixture(params=["parquet-local", "parquet-file-uri", "parquet-mockfs"])
def make(
    request: pytest.FixtureRequest, tmp_path: Path, policy: ResidencyPolicy
) -> Iterator[Factory]:
    kind = request.param
    runtime: dict[str, Any] = {}
    if kind == "parquet-local":
        config = {"type": "parquet", "root": str(tmp_path)}
    elif kind == "parquet-file-uri":
        config = {"type": "parquet", "root": tmp_path.as_uri()}
    else:
        # One mock filesystem per test, shared by its stores (regions must not see each
        # other's records even on one filesystem).
        config = {"type": "parquet", "root": "/cold"}
        runtime["filesystem"] = pafs.SubTreeFileSystem("/", pafs._MockFileSystem())
    made: list[ColdStore] = []

    def factory(region: str) -> ColdStore:
        store = build_backend("cold", config, region=region, residency=policy, **runtime)
        made.append(store)
        return store

    yield factory
    for store in made:
        store.close()


def _key(data_class: str, jurisdiction: str = "eu", n: int = 1) -> DataKey:
    if data_class in PERSONAL_CLASSES:
        return DataKey(data_class, UserKey(jurisdiction, n))
    return DataKey(data_class, f"{data_class[:4]}-{n}")


def test_append_then_read_and_scan(make: Factory) -> None:
    s = make("eu-west")
    assert (
        s.append(
            [(_key("user_features", n=1), b"a"), (_key("user_features", n=2), b"b")],
            date="2024-05-01",
        )
        == 2
    )
    assert s.read(_key("user_features", n=1)) == b"a"
    assert s.read(_key("user_features", n=3)) is None
    assert sorted(s.scan("user_features")) == [("eu:1", b"a"), ("eu:2", b"b")]


def test_history_keeps_every_value_of_one_key_oldest_first(make: Factory) -> None:
    s = make("eu-west")
    k, other = _key("interactions", n=7), _key("interactions", n=8)
    s.append([(k, b"e1"), (other, b"x")], date="2024-05-01")
    s.append([(k, b"e2")], date="2024-05-02")
    s.append([(k, b"e3")], date="2024-05-01")
    assert s.history(k) == [b"e1", b"e2", b"e3"]
    assert s.history(other) == [b"x"]
    assert s.history(_key("interactions", n=9)) == []
    assert make("eu-central").history(k) == []  # regions are separate


def test_newest_value_wins_and_scan_by_date(make: Factory) -> None:
    s = make("eu-west")
    k = _key("sessions")
    s.append([(k, b"old")], date="2024-05-02")
    s.append([(k, b"new")], date="2024-05-01")
    assert s.read(k) == b"new"
    assert s.scan("sessions", date="2024-05-02") == [("eu:1", b"old")]
    assert s.scan("sessions") == [("eu:1", b"old"), ("eu:1", b"new")]


def test_regions_are_separate(make: Factory) -> None:
    make("eu-west").append([(_key("item_catalog"), b"x")], date="2024-05-01")
    assert make("eu-central").read(_key("item_catalog")) is None


def test_empty_append_writes_nothing(make: Factory) -> None:
    s = make("us-east")
    assert s.append([], date="2024-05-01") == 0
    assert s.scan("interactions") == []


def test_oversized_payload_is_refused_and_nothing_written(make: Factory) -> None:
    s = make("eu-west")
    with pytest.raises(InputError, match="over the 1,048,576-byte limit"):
        s.append(
            [(_key("interactions", n=1), b"ok"), (_key("interactions", n=2), b"x" * (1 << 21))],
            date="2024-05-01",
        )
    assert s.scan("interactions") == []


@pytest.mark.parametrize("region", ["eu-west", "eu-central", "us-east"])
@pytest.mark.parametrize("jurisdiction", ["eu", "us"])
@pytest.mark.parametrize("data_class", DATA_CLASSES)
def test_residency_is_followed_exactly(
    make: Factory, policy: ResidencyPolicy, region: str, jurisdiction: str, data_class: str
) -> None:
    """Every class of each jurisdiction to every region of examples/local.yaml."""
    s = make(region)
    key = _key(data_class, jurisdiction)
    if data_class not in PERSONAL_CLASSES or policy.is_allowed(jurisdiction, data_class, region):
        assert s.append([(key, b"v")], date="2024-05-01") == 1
        assert s.read(key) == b"v"
    else:
        with pytest.raises(ResidencyError, match=f"may not be stored in '{region}'"):
            s.append(
                [(_key(data_class, "eu" if jurisdiction == "us" else "us", 2), b"ok"), (key, b"v")],
                date="2024-05-01",
            )
        assert s.read(key) is None
        assert s.scan(data_class) == []
