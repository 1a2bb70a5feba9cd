"""The vector-tier contract, run over every VectorStore backend.

Backends: Milvus Lite (a Milvus server is not available here; add its config to
``CONFIGS`` below when one is). Every store is built from a config mapping through the
``BACKENDS`` registry (``build_backend``). One store per backend and region is shared by
the module, because Milvus Lite takes seconds to open.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geoshard.errors import InputError, ResidencyError
from geoshard.keys import DataKey, UserKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import load_spec
from geoshard.storage.base import VectorStore, build_backend

pytestmark = pytest.mark.integration
DIM = 8
REGIONS = ("eu-west", "eu-central", "us-east")
#: backend name -> its config, given a fresh temp dir.
CONFIGS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "milvus-lite": lambda tmp: {
        "type": "milvus",
        "uri": str(tmp / "milvus.db"),
        "dim": DIM,
        "collection_prefix": "contract",
    },
}


@pytest.fixture(scope="module")
def policy(repo_root: Path) -> ResidencyPolicy:
    return ResidencyPolicy.from_spec(load_spec(repo_root / "examples" / "local.yaml"))


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def stores(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    policy: ResidencyPolicy,
) -> Iterator[dict[str, VectorStore]]:
    config = CONFIGS[request.param](tmp_path_factory.mktemp("vec"))
    made: dict[str, VectorStore] = {}
    try:
        for r in REGIONS:
            made[r] = build_backend("vector", config, region=r, residency=policy)
        yield made
    finally:
        for s in made.values():
            s.close()


def _vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(1, DIM)).astype(np.float32)


def test_upsert_search_delete(stores: dict[str, VectorStore]) -> None:
    s = stores["eu-west"]
    keys = [DataKey("item_embeddings", f"c-{i}") for i in range(20)]
    vecs = np.vstack([_vec(i) for i in range(20)])
    assert (
        s.upsert(keys, vecs, [{"category": "books" if i % 2 else "fashion"} for i in range(20)])
        == 20
    )
    hits = s.search(vecs[4], k=3)
    assert hits[0].id == "c-4"
    assert all(
        h.attrs["category"] == "fashion" for h in s.search(vecs[4], k=5, partition="fashion")
    )
    assert s.delete(keys[:5]) == 5
    assert s.delete(keys[:5]) == 0
    assert "c-4" not in [h.id for h in s.search(vecs[4], k=20)]


def test_nan_embedding_is_refused_and_nothing_written(stores: dict[str, VectorStore]) -> None:
    s = stores["eu-central"]
    before = s.count()
    bad = np.vstack([_vec(1), np.full((1, DIM), np.nan)])
    with pytest.raises(InputError, match="row 1 contains NaN or Inf"):
        s.upsert([DataKey("item_embeddings", "n-1"), DataKey("item_embeddings", "n-2")], bad)
    assert s.count() == before


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("jurisdiction", ["eu", "us"])
@pytest.mark.parametrize("data_class", ["user_embeddings", "item_embeddings"])
def test_residency_is_followed_exactly(
    stores: dict[str, VectorStore],
    policy: ResidencyPolicy,
    region: str,
    jurisdiction: str,
    data_class: str,
) -> None:
    """Both vector classes of each jurisdiction to every region of examples/local.yaml."""
    s = stores[region]
    uid = 1000 + REGIONS.index(region) * 10 + (jurisdiction == "us")
    key = (
        DataKey(data_class, UserKey(jurisdiction, uid))
        if data_class == "user_embeddings"
        else DataKey(data_class, f"{jurisdiction}-item-{uid}")
    )
    before = s.count()
    if data_class == "item_embeddings" or policy.is_allowed(jurisdiction, data_class, region):
        assert s.upsert([key], _vec(uid)) == 1
        assert s.count() == before + 1
    else:
        with pytest.raises(ResidencyError, match=f"may not be stored in '{region}'"):
            s.upsert([DataKey("item_embeddings", f"ok-{uid}"), key], np.vstack([_vec(1), _vec(2)]))
        assert s.count() == before


def test_scan_returns_every_embedding_of_a_class_with_its_attributes(
    stores: dict[str, VectorStore],
) -> None:
    s = stores["eu-central"]
    keys = [DataKey("item_embeddings", f"scan-{i}") for i in range(7)]
    vecs = np.vstack([_vec(100 + i) for i in range(7)])
    s.upsert(keys, vecs, [{"category": "books", "rank": i} for i in range(7)])
    s.upsert([DataKey("user_embeddings", UserKey("eu", 4242))], _vec(5))
    got = {
        owner: (vec, attrs)
        for owner, vec, attrs in s.scan("item_embeddings", batch_size=3)
        if owner.startswith("scan-")
    }
    assert sorted(got) == [f"scan-{i}" for i in range(7)]
    for i in range(7):
        vec, attrs = got[f"scan-{i}"]
        assert np.allclose(vec, vecs[i], atol=1e-6)
        assert attrs["category"] == "books" and attrs["rank"] == i
    assert "eu:4242" in {owner for owner, _, _ in s.scan("user_embeddings")}
    assert not any(o.startswith("scan-") for o, _, _ in stores["us-east"].scan("item_embeddings"))
    with pytest.raises(InputError, match="data_class 'item_catalog' is not in the vector tier"):
        next(iter(s.scan("item_catalog")))
