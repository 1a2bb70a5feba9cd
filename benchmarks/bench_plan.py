"""Planner: a plan of 64 or more candidates, serially against a local Ray on every CPU.

``geoshard plan``'s work is independent tasks (one per cache combination of the screen,
one per simulator run of the confirmation); :func:`geoshard.sim.tasks.run_tasks` runs
them in this process or on Ray. The benchmark plans the same spec with the same search
and seed both ways, checks that the answers are identical, and reports the wall times
(Ray's start-up and shutdown included: that is what a user waits for). Serial and Ray
runs alternate (``--repeat`` pairs, default 3) so the shared machine's noise hits both;
the ratio is the median of the pairs' ``serial / ray`` (goal 1.5 on the project's
2-core machine).

Default: ``examples/validation/plan/residency.yaml`` (3 regions, 2 jurisdictions) with a
search of API servers, warm and hot nodes per region and 16 combinations of the L1 and L2
capacities, 4 headroom levels each (64 candidates), every scenario, the best candidate
confirmed with 2 replications. ``--quick``: 8 combinations (32 candidates), no Ray ratio
goal.

Run: ``python benchmarks/bench_plan.py --json``
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report, log, parser

from geoshard.sim.planner import PlanSettings, auto_scale, deterministic_part, family_z, plan
from geoshard.sim.search import parse_search
from geoshard.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "examples/validation/plan/residency.yaml"
SEARCH = (
    "api.servers=2..12,warm.nodes=1..6,hot.nodes=2..8,"
    "l1.capacity_items=100|200|400|800,l2.capacity_items=5000|10000|20000|40000"
)
QUICK = (
    "api.servers=2..12,warm.nodes=1..6,hot.nodes=2..8,"
    "l1.capacity_items=100|400,l2.capacity_items=5000|10000|20000|40000"
)


def _answer(doc: dict[str, Any]) -> str:
    return json.dumps(deterministic_part(doc), sort_keys=True, default=str)


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--spec", default=str(SPEC))
    p.add_argument("--search", default=None)
    p.add_argument("--workers", type=int, default=0, help="Ray CPUs (0: every CPU)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved serial/Ray pairs")
    args = p.parse_args()
    spec = load_spec(args.spec)
    space = parse_search(args.search or (QUICK if args.quick else SEARCH), spec)
    duration = 20.0
    settings = PlanSettings(
        confirm=1,
        replications=2,
        duration_s=duration,
        scale=auto_scale(spec, duration),
        seed=1,
        margin_z=family_z(sum(2 + r.hot.nodes for r in spec.regions.values())),
    )
    report = Report("plan")
    log(f"plan: {spec.name}, search {space.text}")
    serial_s: list[float] = []
    ray_s: list[float] = []
    pairs: list[float] = []
    same = True
    serial: dict[str, Any] = {}
    on_ray: dict[str, Any] = {}
    for k in range(args.repeat):  # interleaved pairs: the machine's noise hits both sides
        t0 = time.perf_counter()
        serial = plan(spec, space, settings, workers=1)
        serial_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        on_ray = plan(spec, space, settings, workers=args.workers)
        ray_s.append(time.perf_counter() - t0)
        pairs.append(serial_s[-1] / ray_s[-1])
        same = same and _answer(serial) == _answer(on_ray)
        log(f"plan: pair {k + 1}: serial {serial_s[-1]:.1f}s, ray {ray_s[-1]:.1f}s")
    n = len(serial["candidates"])
    report.metrics.update(
        {
            "spec": spec.name,
            "search": space.text,
            "candidates": n,
            "simulator_runs": sum(len(c["runs"]) for c in serial["confirmation"])
            + (len(serial["tightened"]["runs"]) if serial["tightened"] else 0),
            "pairs": args.repeat,
            "serial_s_median": round(statistics.median(serial_s), 2),
            "ray_s_median": round(statistics.median(ray_s), 2),
            "pair_ratios": [round(x, 3) for x in pairs],
            "ray_executor": on_ray["executor"]["executor"],
            "same_answer": same,
        }
    )
    report.ratio("identical_answer", 1.0 if same else 0.0, 1.0)
    if not args.quick:
        ratio = statistics.median(pairs) if n >= 64 else 0.0
        report.ratio("ray_speedup_64_candidates", ratio, 1.5)
    return report.emit(args.json)


if __name__ == "__main__":
    raise SystemExit(main())
