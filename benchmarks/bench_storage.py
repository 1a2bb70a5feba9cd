"""Benchmark: the storage tiers against their raw clients, one section per tier.

Sections (all by default; pick with ``--section NAME``, repeatable):

- ``hot``: batched hot-tier reads through ``RedisHotStore.get_many`` against a raw redis-py
  pipeline (``pipe.get(name)`` for every key, then ``execute()``) on the same keys
  (100 k, or 10 k with ``--quick``), against a real ``redis-server`` this benchmark starts
  on a free loopback port and always stops. Interleaved rounds, median of 5 after a
  warm-up. Ratio ``hot_batched_read_vs_raw_pipeline`` = raw seconds / ours (goal 0.8);
  ``hot_batched_read_vs_raw_mget_pipeline`` compares against raw MGET chunks batched the
  way ours are, so it shows what our layer itself costs.
- ``lru``: our LRU against libCacheSim's LRU, by running ``bench_cache.py`` (its own
  benchmark, not duplicated here) and merging its figures with an ``lru_`` prefix.
- ``warm``: Milvus Lite recall@10 and P50/P99 search latency against exact NumPy search on
  100k random 64-d vectors (``bench_warm.run_warm``); ratio ``warm_recall_at_10`` (goal 0.95).

A section is a function ``section_<name>(report, args)`` registered in :data:`SECTIONS`;
add a tier by adding one.

Usage::

    python benchmarks/bench_storage.py [--quick] [--json] [--section hot] [--section lru] [--section warm]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Report, log, parser

HERE = Path(__file__).resolve().parent


def _interleaved(
    fns: dict[str, Callable[[], object]], repeat: int, warmup: int = 1
) -> dict[str, float]:
    """Median seconds per function, rounds interleaved so drift hits both alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def section_hot(report: Report, args: argparse.Namespace) -> None:
    """RedisHotStore.get_many vs a raw redis-py GET pipeline on the same keys."""
    from geoshard.cluster.local.redis_procs import RedisServer
    from geoshard.keys import DataKey
    from geoshard.storage.redis_store import RedisHotStore, RedisHotStoreConfig

    n_keys = 10_000 if args.quick else 100_000
    repeat = 5
    value = b"x" * 100
    with RedisServer() as server:
        log(f"hot: redis-server on {server.address}; writing {n_keys:,} keys of {len(value)} B")
        store = RedisHotStore(RedisHotStoreConfig(url=server.url), region="us-east", residency=None)
        raw = server.client(timeout_s=30.0)
        try:
            keys = [DataKey("item_catalog", f"sku-{i}") for i in range(n_keys)]
            for start in range(0, n_keys, 10_000):
                store.put_many([(k, value) for k in keys[start : start + 10_000]])
            names = [store.key_name(k) for k in keys]

            def ours() -> list[bytes | None]:
                return store.get_many(keys)

            def theirs() -> list[bytes | None]:
                pipe = raw.pipeline(transaction=False)
                for name in names:
                    pipe.get(name)
                return list(pipe.execute())

            batch = store.config.batch_size

            def raw_mget() -> list[bytes | None]:
                # the strongest raw-client baseline: MGET chunks in one pipeline, as ours does
                pipe = raw.pipeline(transaction=False)
                for start in range(0, n_keys, batch):
                    pipe.mget(names[start : start + batch])
                return [v for chunk in pipe.execute() for v in chunk]

            assert ours() == theirs() == raw_mget() == [value] * n_keys, "the paths disagree"
            log(f"hot: {repeat} interleaved rounds of get_many vs raw pipelines ...")
            med = _interleaved({"ours": ours, "raw": theirs, "raw_mget": raw_mget}, repeat)
        finally:
            store.close()
            raw.close()
    report.metrics.update(
        {
            "hot_keys": n_keys,
            "hot_value_bytes": len(value),
            "hot_repeat": repeat,
            "hot_batch_size": store.config.batch_size,
            "hot_get_many_keys_per_s": round(n_keys / med["ours"]),
            "hot_raw_pipeline_keys_per_s": round(n_keys / med["raw"]),
            "hot_get_many_s": round(med["ours"], 4),
            "hot_raw_pipeline_s": round(med["raw"], 4),
            "hot_raw_mget_pipeline_keys_per_s": round(n_keys / med["raw_mget"]),
        }
    )
    report.ratio("hot_batched_read_vs_raw_pipeline", med["raw"] / med["ours"], goal=0.8)
    # same batching on both sides: what our layer (validation, key layout, retry) costs
    report.ratio("hot_batched_read_vs_raw_mget_pipeline", med["raw_mget"] / med["ours"], goal=0.8)


def section_lru(report: Report, args: argparse.Namespace) -> None:
    """Run bench_cache.py (ours vs libCacheSim LRU) and merge its figures with ``lru_``."""
    argv = [sys.executable, str(HERE / "bench_cache.py"), "--json"]
    if args.quick:
        argv.append("--quick")
    log("lru: running bench_cache.py ...")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    if out.returncode not in (0, 1) or not out.stdout.strip():
        raise RuntimeError(f"bench_cache.py failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for name, val in result["metrics"].items():
        report.metrics[f"lru_{name}"] = val
    for name, r in result["ratios"].items():
        report.ratio(name if name.startswith("lru_") else f"lru_{name}", r["value"], r["goal"])


def section_warm(report: Report, args: argparse.Namespace) -> None:
    """Milvus Lite recall@10 and latency against exact NumPy search (bench_warm.run_warm)."""
    from bench_warm import run_warm

    run_warm(report, args.quick)


#: Section name -> function; run in this order.
SECTIONS: dict[str, Callable[[Report, argparse.Namespace], None]] = {
    "hot": section_hot,
    "lru": section_lru,
    "warm": section_warm,
}


def main() -> int:
    """Run the chosen sections; exit 0 when every ratio meets its goal, 1 otherwise."""
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--section",
        action="append",
        choices=sorted(SECTIONS),
        help="run only this section (repeatable); default: all",
    )
    args = p.parse_args()
    chosen = args.section or list(SECTIONS)
    report = Report("bench_storage")
    report.metrics["sections"] = [name for name in SECTIONS if name in chosen]
    for name, section in SECTIONS.items():
        if name in chosen:
            section(report, args)
    return report.emit(args.json)


if __name__ == "__main__":
    sys.exit(main())
