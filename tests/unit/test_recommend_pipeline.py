"""The staged recommend pipeline: stages, budgets, the labelled fallback, cold start.

The item snapshot is a real :class:`ItemIndex`; the user's data comes from a plain
in-memory :class:`Sources` (in a deployment the region service reads the same four
things through the cache walk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geoshard.cluster.itemindex import ItemIndex
from geoshard.cluster.pipeline import DotRecencyScorer, RecommendPipeline
from geoshard.errors import BackendUnavailableError
from geoshard.keys import UserKey
from geoshard.spec import Spec, load_spec

DIM = 8
NOW = 1_800_000_000.0
USER = UserKey("eu", 1)


@pytest.fixture(scope="module")
def spec(repo_root: Path) -> Spec:
    return load_spec(repo_root / "examples" / "local.yaml")


def _index() -> ItemIndex:
    """12 items: 4 per category, category c's items near axis c; item 3 unavailable."""
    rng = np.random.default_rng(0)
    cats = ["books", "fashion", "toys"]
    vecs, cat, ids = [], [], []
    for c in range(3):
        for j in range(4):
            v = np.zeros(DIM, np.float32)
            v[c] = 1.0
            v += 0.05 * rng.normal(size=DIM).astype(np.float32)
            vecs.append(v / np.linalg.norm(v))
            cat.append(cats[c])
            ids.append(f"i{c * 4 + j}")
    shard = np.array([{"books": 1, "fashion": 0, "toys": 2}[c] for c in cat], np.int16)
    avail = np.ones(12, bool)
    avail[3] = False
    return ItemIndex(
        "v1",
        np.array(ids, dtype=object),
        np.vstack(vecs),
        shard,
        ["items-a", "items-b", "items-c"],
        np.array(cat, dtype=object),
        np.arange(12, 0, -1).astype(np.float32),
        np.full(12, NOW - 86_400.0),
        avail,
    )


class Src:
    def __init__(
        self, emb: np.ndarray | None, seen: list[str] | None = None, fail: bool = False
    ) -> None:
        self.emb, self._seen, self.fail = emb, seen or [], fail

    def features(self, user: UserKey) -> dict[str, Any] | None:
        if self.fail:
            raise BackendUnavailableError("no replica of eu:1 answered")
        return {"features": {}}

    def embedding(self, user: UserKey) -> np.ndarray | None:
        return self.emb

    def seen(self, user: UserKey) -> list[str]:
        return list(self._seen)

    def trending(self) -> list[str]:
        return ["i11", "i0", "i5"]


def _axis(c: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[c] = 1.0
    return v


def _pipe(spec: Spec, timer: Any = None) -> RecommendPipeline:
    kw = {"timer": timer} if timer is not None else {}
    return RecommendPipeline(spec, "eu-west", _index, clock=lambda: NOW, **kw)


def test_budgets_are_the_spec_fractions_of_the_recommend_p99(spec: Spec) -> None:
    assert _pipe(spec).budgets_ms == {
        "sourcing": 20.0,
        "recall": 40.0,
        "integrity": 10.0,
        "precision": 30.0,
    }


def test_personal_answers_come_from_the_nearest_items_minus_seen_and_unavailable(
    spec: Spec,
) -> None:
    res = _pipe(spec).run(USER, k=3, context=None, sources=Src(_axis(0), seen=["i0"]))
    assert not res.degraded and res.strategy == "personal"
    # the two unseen, available books first (the other two are seen or unavailable)
    assert {i["item_id"] for i in res.items[:2]} == {"i1", "i2"}
    assert res.items[2]["category"] != "books"
    got = {i["item_id"] for i in res.items}
    assert "i0" not in got and "i3" not in got  # seen; unavailable in the region
    assert set(res.stage_ms) == {"sourcing", "recall", "integrity", "precision"}


def test_a_context_keeps_only_its_category(spec: Spec) -> None:
    res = _pipe(spec).run(USER, k=10, context="toys", sources=Src(_axis(0)))
    assert res.items and {i["category"] for i in res.items} == {"toys"}


def test_a_stage_over_its_budget_degrades_to_popular_items_and_says_so(spec: Spec) -> None:
    t = {"now": 0.0}

    def timer() -> float:  # each call advances 25 ms: sourcing takes 25 ms > 20 ms
        t["now"] += 0.025
        return t["now"]

    res = _pipe(spec, timer).run(USER, k=2, context=None, sources=Src(_axis(0), seen=["i11"]))
    assert res.degraded and res.degraded_stage == "sourcing" and res.strategy == "popular"
    assert "sourcing took 25.0 ms, over its budget of 20.0 ms" in res.reason
    assert [i["item_id"] for i in res.items] == ["i0", "i5"]  # trending minus seen


def test_a_failed_stage_degrades_too(spec: Spec) -> None:
    res = _pipe(spec).run(USER, k=2, context=None, sources=Src(_axis(0), fail=True))
    assert res.degraded and res.degraded_stage == "sourcing"
    assert "no replica of eu:1 answered" in res.reason


def test_cold_start_uses_history_then_context_then_popularity(spec: Spec) -> None:
    p = _pipe(spec)
    by_history = p.run(USER, k=2, context=None, sources=Src(None, seen=["i4", "i5"]))
    assert by_history.strategy == "cold_start_content" and not by_history.degraded
    assert {i["category"] for i in by_history.items} == {"fashion"}
    by_context = p.run(USER, k=2, context="toys", sources=Src(None))
    assert by_context.strategy == "cold_start_popular"
    assert {i["category"] for i in by_context.items} == {"toys"}
    popular = p.run(USER, k=2, context=None, sources=Src(None))
    # trending items, ranked by the scorer's popularity prior (i0 and i5 before i11)
    assert popular.strategy == "cold_start_popular"
    assert [i["item_id"] for i in popular.items] == ["i0", "i5"]


def test_the_fallback_uses_no_personal_data(spec: Spec) -> None:
    res = _pipe(spec).fallback(k=2, context=None, trending=["i3", "i7", "i8"], reason="no region")
    assert res.degraded and [i["item_id"] for i in res.items] == ["i7", "i8"]  # i3 unavailable


def test_recency_breaks_ties_between_equally_similar_items() -> None:
    idx = _index()
    idx.created_s[5] = NOW  # brand new
    from geoshard.cluster.pipeline import Candidate

    scores = DotRecencyScorer().score(
        idx, [Candidate(4, 0.5, "ann"), Candidate(5, 0.5, "ann")], NOW
    )
    assert scores[1] > scores[0]


def test_the_index_searches_one_shard_or_all() -> None:
    idx = _index()
    rows, sims = idx.search(_axis(1), k=2, shard=0)  # items-a holds fashion
    assert {str(idx.ids[r]) for r in rows} <= {"i4", "i5", "i6", "i7"} and sims[0] >= sims[1]
    rows, _ = idx.search(_axis(2), k=1)
    assert str(idx.ids[rows[0]]).startswith("i") and idx.category[rows[0]] == "toys"
    from geoshard.errors import InputError

    with pytest.raises(InputError, match="zero or not finite"):
        idx.search(np.zeros(DIM), k=1)
