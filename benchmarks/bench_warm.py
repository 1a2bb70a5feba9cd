"""Warm tier: Milvus Lite recall@10 and search latency against exact NumPy search.

100k random 64-d vectors (20k with ``--quick``) go into a Milvus Lite collection through
:class:`geoshard.storage.milvus_store.MilvusVectorStore`; each query's top 10 is compared
with the exact top 10 from NumPy on the same vectors (cosine). Reported: recall@10 (goal
>= 0.95), P50/P99 search latency of Milvus and of the exact NumPy search, insert rate.

Run: ``python benchmarks/bench_warm.py --json``
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report, log, parser

from geoshard.keys import DataKey
from geoshard.storage.milvus_store import (
    MilvusIndexConfig,
    MilvusVectorStore,
    MilvusVectorStoreConfig,
)

DIM = 64
INDEX = MilvusIndexConfig(
    type="HNSW", params={"M": 32, "efConstruction": 200}, search_params={"ef": 200}
)


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def run_warm(report: Report, quick: bool) -> None:
    """Measure warm-tier recall@10 and latency; fill ``report`` (ratio ``warm_recall_at_10``)."""
    n, n_queries = (20_000, 100) if quick else (100_000, 300)
    rng = np.random.default_rng(42)
    data = rng.normal(size=(n, DIM)).astype(np.float32)
    queries = rng.normal(size=(n_queries, DIM)).astype(np.float32)
    cats = np.array(["books", "fashion", "electronics", "home"])
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        cfg = MilvusVectorStoreConfig(uri=f"{tmp}/milvus.db", dim=DIM, metric="COSINE", index=INDEX)
        store = MilvusVectorStore(cfg, "eu-west", None)
        try:
            keys = [DataKey("item_embeddings", f"i{i}") for i in range(n)]
            attrs = [{"category": str(cats[i % 4])} for i in range(n)]
            t0 = time.perf_counter()
            for s in range(0, n, 10_000):
                store.upsert(keys[s : s + 10_000], data[s : s + 10_000], attrs[s : s + 10_000])
            store._client.flush(store.collection)  # seal segments so the index serves searches
            insert_s = time.perf_counter() - t0
            log(f"warm: inserted {n} vectors in {insert_s:.1f}s")
            for q in queries[:10]:  # warm-up: load the index
                store.search(q, k=10)
            lat, found = [], []
            for q in queries:
                t = time.perf_counter()
                hits = store.search(q, k=10)
                lat.append((time.perf_counter() - t) * 1e3)
                found.append({int(h.id[1:]) for h in hits})
        finally:
            store.close()
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    exact_lat, hits_total = [], 0
    for q, got in zip(queries, found, strict=True):
        t = time.perf_counter()
        sims = unit @ (q / np.linalg.norm(q))
        top = np.argpartition(-sims, 10)[:10]
        exact_lat.append((time.perf_counter() - t) * 1e3)
        hits_total += len(got & {int(i) for i in top})
    recall = hits_total / (10 * n_queries)
    report.metrics.update(
        {
            "warm_vectors": n,
            "warm_dim": DIM,
            "warm_queries": n_queries,
            "warm_index": f"{INDEX.type} {INDEX.params} search {INDEX.search_params}",
            "warm_recall_at_10": round(recall, 4),
            "warm_search_p50_ms": round(_pct(lat, 50), 3),
            "warm_search_p99_ms": round(_pct(lat, 99), 3),
            "warm_search_mean_ms": round(statistics.fmean(lat), 3),
            "numpy_exact_p50_ms": round(_pct(exact_lat, 50), 3),
            "numpy_exact_p99_ms": round(_pct(exact_lat, 99), 3),
            "warm_insert_rows_per_s": round(n / insert_s),
        }
    )
    report.ratio("warm_recall_at_10", recall, 0.95)


def main() -> int:
    """Run the warm-tier benchmark and print it (``--json`` for one JSON object)."""
    args = parser(__doc__.splitlines()[0]).parse_args()
    report = Report("warm")
    run_warm(report, args.quick)
    return report.emit(args.json)


if __name__ == "__main__":
    raise SystemExit(main())
