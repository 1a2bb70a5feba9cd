"""Benchmark: geoshard's HashRing against uhashring (defaults: md5, 160 vnodes) in one run.

Both rings get 16 nodes ``node00 .. node15`` and the same key objects, the ints
``0 .. N-1`` (uhashring hashes ``str(key)`` internally; ours hashes the int with
splitmix64). Reported:

* single-key lookups/s: ``HashRing.owner`` vs uhashring ``get_node``;
* batch keys/s: ``HashRing.owners_batch`` on the same keys as a NumPy array (and, as a
  metric, on the string keys ``str(i)``);
* max/mean load of both rings on those keys, and the 16 -> 17 node moved fraction;
* build times (ours also with the bucket table the first batch call builds).

Ratios (higher is better): ``single_vs_uhashring`` (goal 1.0) and
``batch_vs_uhashring_single`` (goal 10.0).

Run: ``python benchmarks/bench_ring.py [--json] [--quick]``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from uhashring import HashRing as UHashRing

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report, log, median_seconds, parser

from geoshard.shards import DEFAULT_VNODES, HashRing, plan_rebalance

NODES = [f"node{i:02d}" for i in range(16)]


def _max_over_mean(owners: list[str] | np.ndarray, nodes: list[str]) -> float:
    if isinstance(owners, np.ndarray):
        loads = np.bincount(owners, minlength=len(nodes))
    else:
        index = {n: i for i, n in enumerate(nodes)}
        loads = np.bincount([index[o] for o in owners], minlength=len(nodes))
    return round(float(loads.max() / loads.mean()), 4)


def main() -> int:
    """Run the benchmark and print the report; exit 1 when a ratio misses its goal."""
    args = parser(__doc__.splitlines()[0]).parse_args()
    n_keys = 100_000 if args.quick else 1_000_000
    repeat = 3 if args.quick else 5
    keys = list(range(n_keys))
    key_array = np.arange(n_keys, dtype=np.uint64)
    str_keys = [str(i) for i in keys]
    report = Report("bench_ring")

    log("building rings")
    build_ours = median_seconds(lambda: HashRing(NODES), repeat=repeat)
    build_theirs = median_seconds(lambda: UHashRing(nodes=NODES), repeat=repeat)
    # The batch path builds a bucket table on first use; count it once here.
    one_key = np.zeros(1, dtype=np.uint64)
    build_batch = median_seconds(lambda: HashRing(NODES).owners_batch(one_key), repeat=repeat)
    ours = HashRing(NODES)
    theirs = UHashRing(nodes=NODES)

    # Single-key lookups: a time slice of the key list, several repetitions.
    sample = keys[: min(n_keys, 200_000)]
    owner, get_node = ours.owner, theirs.get_node
    log(f"single-key lookups on {len(sample):,} keys x {repeat}")
    t_ours = median_seconds(lambda: [owner(k) for k in sample], repeat=repeat)
    t_theirs = median_seconds(lambda: [get_node(k) for k in sample], repeat=repeat)
    single_ours, single_theirs = len(sample) / t_ours, len(sample) / t_theirs

    log(f"batch lookups on {n_keys:,} keys")
    t_batch = median_seconds(lambda: ours.owners_batch(key_array), repeat=repeat)
    t_batch_str = median_seconds(lambda: ours.owners_batch(str_keys), repeat=1)
    batch = n_keys / t_batch

    log("load balance and 16 -> 17 movement on all keys")
    t0 = time.perf_counter()
    their_owners = [get_node(k) for k in keys]
    t_theirs_all = time.perf_counter() - t0
    our_owners = ours.owners_batch(key_array)
    theirs17 = UHashRing(nodes=[*NODES, "node16"])
    moved_theirs = (
        sum(a != theirs17.get_node(k) for k, a in zip(keys, their_owners, strict=True)) / n_keys
    )
    plan = plan_rebalance(ours, ours.with_node("node16"), key_array)
    bounded = ours.assign_bounded(key_array, eps=0.05)

    m = report.metrics
    m["keys"] = f"{n_keys:,} ints 0..N-1, same objects to both (uhashring hashes str(key))"
    m["ours_vnodes_per_node"] = DEFAULT_VNODES
    m["uhashring_vnodes_per_node"] = 160
    m["ours_single_lookups_per_s"] = round(single_ours)
    m["uhashring_single_lookups_per_s"] = round(single_theirs)
    m["uhashring_single_lookups_per_s_all_keys_once"] = round(n_keys / t_theirs_all)
    m["ours_batch_int_keys_per_s"] = round(batch)
    m["ours_batch_str_keys_per_s"] = round(n_keys / t_batch_str)
    m["ours_max_over_mean"] = _max_over_mean(our_owners, list(ours.nodes))
    m["uhashring_max_over_mean"] = _max_over_mean(their_owners, NODES)
    m["ours_bounded_eps0.05_max_over_mean"] = round(bounded.max_over_mean, 4)
    m["ours_bounded_eps0.05_spill_pct"] = round(100 * bounded.spill_fraction, 3)
    m["ours_moved_pct_16_to_17"] = round(100 * plan.moved_fraction, 3)
    m["uhashring_moved_pct_16_to_17"] = round(100 * moved_theirs, 3)
    m["ideal_moved_pct_16_to_17"] = round(100 / 17, 3)
    m["ours_build_ms"] = round(1000 * build_ours, 2)
    m["ours_build_plus_first_batch_ms"] = round(1000 * build_batch, 2)
    m["uhashring_build_ms"] = round(1000 * build_theirs, 2)
    report.ratio("single_vs_uhashring", single_ours / single_theirs, 1.0)
    report.ratio("batch_vs_uhashring_single", batch / single_theirs, 10.0)
    return report.emit(args.json)


if __name__ == "__main__":
    sys.exit(main())
