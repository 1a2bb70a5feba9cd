"""Benchmark: geoshard's pure-Python LRU against libCacheSim's LRU on one Zipf trace.

Both replay the same IRM Zipf trace (alpha 0.8, 1 M objects, capacity 10 k objects,
object sizes ignored): 10 M requests, or 1 M with ``--quick``. libCacheSim (the
``libcachesim`` Python package, C inside) replays the trace written as an oracleGeneral
file with ``LRU.process_trace``; ours replays the same ids from a Python list with
``LRU.access``. Only the replay is timed, never trace generation or file writing.
Medians of three interleaved rounds after a warm-up. ``--quick`` flatters the speed
ratio: libCacheSim's fixed set-up (a 2^24-bucket hash table) weighs more on 1 M requests.

Ratios (higher is better):

- ``lru_speed_vs_libcachesim``: our req/s / libCacheSim's req/s (goal 0.3).
- ``miss_ratio_identical``: 1.0 when both miss ratios are exactly equal (goal 1.0).

Also reported: libCacheSim driven per request from Python (``cache.get(req)``), the way a
SimPy model would embed it, on the first 1 M requests.

Usage::

    python benchmarks/bench_cache.py [--quick] [--json]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Report, log, parser

from geoshard.storage.cache import LRU, irm_requests, zipf_popularities

ORACLE_GENERAL = np.dtype([("ts", "<u4"), ("id", "<u8"), ("sz", "<u4"), ("nxt", "<i8")])
N_OBJECTS = 1_000_000
ALPHA = 0.8
CAPACITY = 10_000
SEED = 1


def make_trace(n_requests: int) -> np.ndarray:
    """Object ids (>= 1) of an IRM Zipf trace, ranks shuffled so popularity is not id order."""
    rng = np.random.default_rng(SEED)
    ranks = irm_requests(zipf_popularities(N_OBJECTS, ALPHA), n_requests, rng)
    ids: np.ndarray = rng.permutation(N_OBJECTS).astype(np.uint64)[ranks] + 1
    return ids


def write_oracle_general(ids: np.ndarray, path: Path) -> None:
    """Write ``ids`` as an oracleGeneral trace (size 1, 1000 requests per trace second)."""
    records = np.zeros(len(ids), dtype=ORACLE_GENERAL)
    records["ts"] = np.arange(len(ids), dtype=np.uint64) // 1000
    records["id"] = ids
    records["sz"] = 1
    records["nxt"] = -1
    records.tofile(path)


def timed_pair(
    setups: dict[str, Callable[[], Callable[[], float]]], repeat: int
) -> dict[str, tuple[float, float]]:
    """Median seconds of each ``run = setup()`` and its result, runs interleaved.

    Interleaving (A, B, A, B, ...) exposes both sides to the same background load, so
    the ratio is fairer on a shared machine than two separate blocks would be.
    """
    times: dict[str, list[float]] = {name: [] for name in setups}
    results: dict[str, float] = {}
    for _ in range(repeat):
        for name, setup in setups.items():
            run = setup()
            t0 = time.perf_counter()
            results[name] = run()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(times[name]), results[name]) for name in setups}


def main() -> int:
    """Run the benchmark; exit 0 when every ratio meets its goal, 1 otherwise."""
    args = parser(__doc__.splitlines()[0]).parse_args()
    import libcachesim as lcs

    n_requests = 1_000_000 if args.quick else 10_000_000
    repeat = 3
    log(f"generating a {n_requests:,}-request Zipf trace (alpha {ALPHA}, {N_OBJECTS:,} objects)")
    ids = make_trace(n_requests)
    id_list = ids.tolist()

    def ours() -> Callable[[], float]:
        cache = LRU(capacity_items=CAPACITY)

        def run() -> float:
            access = cache.access
            for key in id_list:
                access(key)
            return cache.stats.miss_ratio

        return run

    with tempfile.TemporaryDirectory(prefix="geoshard-bench-cache-") as tmp:
        trace_path = Path(tmp) / "zipf.oracleGeneral.bin"
        write_oracle_general(ids, trace_path)

        def theirs() -> Callable[[], float]:
            reader = lcs.TraceReader(
                str(trace_path),
                lcs.TraceType.ORACLE_GENERAL_TRACE,
                lcs.ReaderInitParam(ignore_obj_size=True),
            )
            cache = lcs.LRU(cache_size=CAPACITY)
            return lambda: float(cache.process_trace(reader)[0])

        log(f"libcachesim LRU.process_trace and geoshard LRU.access, {repeat} rounds ...")
        timed_pair({"theirs": theirs}, 1)  # warm-up: page cache, allocator
        timings = timed_pair({"theirs": theirs, "ours": ours}, repeat)
        lcs_s, lcs_miss = timings["theirs"]
        ours_s, ours_miss = timings["ours"]

    n_get = min(n_requests, 1_000_000)
    get_ids = id_list[:n_get]

    def theirs_per_request() -> Callable[[], float]:
        cache = lcs.LRU(cache_size=CAPACITY)
        req = lcs.Request(obj_size=1)

        def run() -> float:
            get = cache.get
            misses = 0
            for key in get_ids:
                req.obj_id = key
                if not get(req):
                    misses += 1
            return misses / n_get

        return run

    log(f"libcachesim LRU.get per request from Python ({n_get:,} requests) ...")
    get_s, _ = timed_pair({"get": theirs_per_request}, repeat)["get"]

    ours_rps = n_requests / ours_s
    lcs_rps = n_requests / lcs_s
    report = Report("bench_cache")
    report.metrics.update(
        {
            "requests": n_requests,
            "objects": N_OBJECTS,
            "zipf_alpha": ALPHA,
            "capacity_items": CAPACITY,
            "repeat": repeat,
            "geoshard_lru_req_per_s": round(ours_rps),
            "libcachesim_lru_req_per_s": round(lcs_rps),
            "libcachesim_lru_get_loop_req_per_s": round(n_get / get_s),
            "geoshard_lru_miss_ratio": round(ours_miss, 6),
            "libcachesim_lru_miss_ratio": round(lcs_miss, 6),
            "libcachesim_version": getattr(lcs, "__version__", "?"),
        }
    )
    report.ratio("lru_speed_vs_libcachesim", ours_rps / lcs_rps, goal=0.3)
    report.ratio(
        "miss_ratio_identical", 1.0 if abs(ours_miss - lcs_miss) < 1e-12 else 0.0, goal=1.0
    )
    return report.emit(args.json)


if __name__ == "__main__":
    sys.exit(main())
