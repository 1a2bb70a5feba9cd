"""The staged recommend pipeline the simulator models: sourcing -> recall -> integrity ->
precision, each within its budget, degrading to popular items when one misses it.

Budgets come from the spec: stage ``s`` may take ``slo.stage_budgets[s] x
slo.latency.recommend.p99_ms``. A stage that fails, or finishes after its budget, stops
the pipeline and the answer becomes the region's popular items (minus what the user has
seen, when that is known), labelled ``degraded`` with the stage and the reason, never
passed off as the real answer.

* **sourcing**: the user's features, embedding and recently seen items, and the region's
  trending list (every read goes through the cache walk of the region:
  :class:`Sources`).
* **recall**: nearest items to the user's embedding in every item-attribute shard
  (:class:`~geoshard.cluster.itemindex.ItemIndex`, or a Milvus search per shard with
  ``deploy.recall: milvus``), plus the trending items. A **cold-start** user (no
  embedding) gets content-based candidates instead: items near what they have seen,
  else the popular items of the ``context`` category, else the trending items.
* **integrity**: items not available in the region, already seen, or repeated are dropped;
  a ``context`` category keeps only its items.
* **precision**: a pluggable :class:`Scorer` ranks the rest (default
  :class:`DotRecencyScorer`: similarity plus a recency bonus).

Examples:
    >>> pipe = RecommendPipeline(spec, "eu-west", lambda: index)      # doctest: +SKIP
    >>> pipe.run(UserKey("eu", 1), k=10, context=None, sources=src).items[:2]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from geoshard.cluster.itemindex import ItemIndex
from geoshard.errors import GeoshardError
from geoshard.keys import UserKey
from geoshard.spec import STAGES, Spec

__all__ = [
    "SCORERS",
    "Candidate",
    "DotRecencyScorer",
    "RecommendPipeline",
    "RecommendResult",
    "Scorer",
    "Sources",
]


@dataclass
class Candidate:
    """An item the recall stage proposes."""

    row: int
    similarity: float
    source: str  # "ann", "popular" or "content"


class Scorer(Protocol):
    """Ranks candidates: a higher score first."""

    def score(self, index: ItemIndex, candidates: Sequence[Candidate], now_s: float) -> np.ndarray:
        """One score per candidate."""
        ...


@dataclass(frozen=True)
class DotRecencyScorer:
    """Score = similarity (the dot product of unit vectors) + a recency bonus
    ``recency_weight x exp(-age / half_life)`` + a small popularity prior.

    Args:
        recency_weight: the bonus of a brand-new item.
        half_life_days: the age at which the bonus is ``1/e`` of it.
        popularity_weight: weight of ``log1p(popularity)`` (scaled to [0, 1]).
    """

    recency_weight: float = 0.15
    half_life_days: float = 30.0
    popularity_weight: float = 0.05

    def score(self, index: ItemIndex, candidates: Sequence[Candidate], now_s: float) -> np.ndarray:
        """One score per candidate."""
        if not candidates:
            return np.zeros(0)
        rows = np.array([c.row for c in candidates])
        sims = np.array([c.similarity for c in candidates], dtype=np.float64)
        age_days = np.maximum(0.0, now_s - index.created_s[rows]) / 86_400.0
        recency = self.recency_weight * np.exp(-age_days / self.half_life_days)
        pop = np.log1p(np.maximum(0.0, index.popularity[rows].astype(np.float64)))
        top = float(pop.max()) if len(pop) else 0.0
        return sims + recency + self.popularity_weight * (pop / top if top > 0 else pop)


#: Scorers by the name ``deploy.scorer`` gives.
SCORERS: dict[str, Callable[[], Scorer]] = {"dot_recency": DotRecencyScorer}


class Sources(Protocol):
    """Where the sourcing stage reads from (each read through the region's cache walk)."""

    def features(self, user: UserKey) -> dict[str, Any] | None:
        """The user's features, or None."""
        ...

    def embedding(self, user: UserKey) -> np.ndarray | None:
        """The user's embedding, or None (a cold-start user)."""
        ...

    def seen(self, user: UserKey) -> list[str]:
        """Item ids the user interacted with recently."""
        ...

    def trending(self) -> list[str]:
        """The region's popular item ids, most popular first."""
        ...


@dataclass
class RecommendResult:
    """A recommend answer.

    Attributes:
        items: ``{"item_id", "score", "source", "category"}`` best first.
        strategy: ``personal``, ``cold_start_content``, ``cold_start_popular`` or ``popular``.
        degraded: True when a stage missed its budget or failed and the answer is the
            popular fallback.
        degraded_stage: the stage that missed, when degraded.
        reason: why it degraded (or why a cold-start strategy was used).
        stage_ms: milliseconds each stage took.
        budgets_ms: each stage's budget.
    """

    items: list[dict[str, Any]]
    strategy: str
    degraded: bool = False
    degraded_stage: str | None = None
    reason: str = ""
    stage_ms: dict[str, float] = field(default_factory=dict)
    budgets_ms: dict[str, float] = field(default_factory=dict)


class _Degrade(Exception):
    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


class RecommendPipeline:
    """The four stages, with the spec's budgets.

    Args:
        spec: the topology (``slo.stage_budgets``, ``slo.latency.recommend``, ``deploy``).
        region: the region the pipeline runs in.
        index: returns the live item snapshot of the region.
        scorer: the precision stage's scorer (default from ``deploy.scorer``).
        ann: optional Milvus recall, ``ann(vector, k, shard_name) -> [(item_id, similarity)]``
            (``deploy.recall: milvus``).
        clock: wall-clock seconds (item ages).
        timer: monotonic seconds (stage budgets).
        candidates_per_shard: how many nearest items each shard contributes.
    """

    def __init__(
        self,
        spec: Spec,
        region: str,
        index: Callable[[], ItemIndex],
        *,
        scorer: Scorer | None = None,
        ann: Callable[[np.ndarray, int, str], list[tuple[str, float]]] | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
        candidates_per_shard: int = 100,
    ) -> None:
        self.region = region
        self._index = index
        self.scorer = scorer or SCORERS[spec.deploy.scorer]()
        self._ann = ann
        self._clock = clock
        self._timer = timer
        self.per_shard = candidates_per_shard
        rec = spec.slo.latency.get("recommend")
        p99 = rec.p99_ms if rec is not None else float("inf")
        self.budgets_ms = {s: spec.slo.stage_budgets.get(s, 1.0) * p99 for s in STAGES}

    # -- the stages ----------------------------------------------------------------------
    def run(
        self,
        user: UserKey,
        *,
        k: int,
        context: str | None,
        sources: Sources,
        on_stage: Callable[[str, float], None] | None = None,
    ) -> RecommendResult:
        """Recommend ``k`` items to ``user`` (``context``: an optional category)."""
        index = self._index()
        stage_ms: dict[str, float] = {}
        seen: list[str] = []
        trending: list[str] = []

        def timed(stage: str, fn: Callable[[], Any]) -> Any:
            t0 = self._timer()
            try:
                out = fn()
            except GeoshardError as exc:
                stage_ms[stage] = (self._timer() - t0) * 1000
                raise _Degrade(stage, f"{stage} failed: {exc}") from None
            ms = stage_ms[stage] = (self._timer() - t0) * 1000
            if on_stage is not None:
                on_stage(stage, ms / 1000)
            if ms > self.budgets_ms[stage]:
                raise _Degrade(
                    stage,
                    f"{stage} took {ms:.1f} ms, over its budget of {self.budgets_ms[stage]:.1f} ms",
                )
            return out

        try:

            def sourcing() -> tuple[dict[str, Any] | None, np.ndarray | None]:
                nonlocal seen, trending
                trending = sources.trending()
                seen = sources.seen(user)
                return sources.features(user), sources.embedding(user)

            features, emb = timed("sourcing", sourcing)
            cands, strategy, why = timed(
                "recall", lambda: self._recall(index, emb, seen, trending, context, k)
            )
            kept = timed("integrity", lambda: self._integrity(index, cands, seen, context))
            items = timed("precision", lambda: self._precision(index, kept, k))
        except _Degrade as d:
            items = self._popular(index, trending, seen, context, k)
            return RecommendResult(
                items, "popular", True, d.stage, d.reason, stage_ms, dict(self.budgets_ms)
            )
        del features
        return RecommendResult(items, strategy, False, None, why, stage_ms, dict(self.budgets_ms))

    def fallback(
        self, *, k: int, context: str | None, trending: list[str], reason: str
    ) -> RecommendResult:
        """The popular items of the region, labelled degraded: the answer when no region
        may process the user's data now (it uses no personal data)."""
        items = self._popular(self._index(), trending, [], context, k)
        return RecommendResult(
            items, "popular", True, "sourcing", reason, {}, dict(self.budgets_ms)
        )

    def _recall(
        self,
        index: ItemIndex,
        emb: np.ndarray | None,
        seen: list[str],
        trending: list[str],
        context: str | None,
        k: int,
    ) -> tuple[list[Candidate], str, str]:
        out: list[Candidate] = []
        pop_rows = [index.pos[i] for i in trending[: max(50, 2 * k)] if i in index.pos]
        query: np.ndarray | None = None
        strategy, why = "personal", ""
        if emb is not None and np.isfinite(emb).all() and float(np.linalg.norm(emb)) > 0:
            query = emb
        else:
            seen_rows = [index.pos[i] for i in seen if i in index.pos]
            if seen_rows:
                query = np.asarray(index.vectors[seen_rows]).mean(axis=0)
                strategy, why = "cold_start_content", "no embedding: items near what the user saw"
            elif context:
                rows = np.flatnonzero(index.category == context)
                order = rows[np.argsort(-index.popularity[rows], kind="stable")][: 4 * k]
                return (
                    [Candidate(int(r), 0.0, "content") for r in order],
                    "cold_start_popular",
                    f"no embedding and no history: popular {context} items",
                )
            else:
                return (
                    [Candidate(r, 0.0, "popular") for r in pop_rows],
                    "cold_start_popular",
                    "no embedding and no history: popular items",
                )
        if query is not None and len(index):
            if self._ann is not None:
                for s, name in enumerate(index.shard_names):
                    del s
                    for item_id, sim in self._ann(query, self.per_shard, name):
                        if item_id in index.pos:
                            out.append(Candidate(index.pos[item_id], sim, "ann"))
            else:
                for s in range(len(index.shard_names)):
                    rows, sims = index.search(query, self.per_shard, shard=s)
                    out += [
                        Candidate(int(r), float(v), "ann") for r, v in zip(rows, sims, strict=True)
                    ]
        out += [Candidate(r, 0.0, "popular") for r in pop_rows]
        return out, strategy, why

    @staticmethod
    def _integrity(
        index: ItemIndex, cands: list[Candidate], seen: list[str], context: str | None
    ) -> list[Candidate]:
        seen_rows = {index.pos[i] for i in seen if i in index.pos}
        best: dict[int, Candidate] = {}
        for c in cands:
            if c.row in seen_rows or not bool(index.available[c.row]):
                continue
            if context and index.category[c.row] != context:
                continue
            old = best.get(c.row)
            if old is None or c.similarity > old.similarity:
                best[c.row] = c
        return list(best.values())

    def _precision(self, index: ItemIndex, cands: list[Candidate], k: int) -> list[dict[str, Any]]:
        if not cands:
            return []
        scores = self.scorer.score(index, cands, self._clock())
        order = np.argsort(-scores, kind="stable")[:k]
        return [self._item(index, cands[i].row, float(scores[i]), cands[i].source) for i in order]

    @staticmethod
    def _item(index: ItemIndex, row: int, score: float, source: str) -> dict[str, Any]:
        return {
            "item_id": str(index.ids[row]),
            "score": round(score, 6) if math.isfinite(score) else 0.0,
            "source": source,
            "category": str(index.category[row]),
        }

    def _popular(
        self, index: ItemIndex, trending: list[str], seen: list[str], context: str | None, k: int
    ) -> list[dict[str, Any]]:
        """The fallback: popular items of the region (not seen, available, in context)."""
        seen_set = set(seen)
        out: list[dict[str, Any]] = []
        ids = list(trending)
        if len(ids) < 4 * k and len(index):
            order = np.argsort(-index.popularity, kind="stable")[: 8 * k]
            ids += [str(index.ids[r]) for r in order]
        done: set[str] = set()
        for i in ids:
            if i in seen_set or i in done:
                continue
            done.add(i)
            row = index.pos.get(i)
            if row is not None and (
                not bool(index.available[row]) or (context and index.category[row] != context)
            ):
                continue
            out.append(
                {
                    "item_id": i,
                    "score": 0.0,
                    "source": "popular",
                    "category": str(index.category[row]) if row is not None else "",
                }
            )
            if len(out) >= k:
                break
        return out
