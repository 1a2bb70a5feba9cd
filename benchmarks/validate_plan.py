"""The planner's analytic model against the simulator on the specs of examples/validation/plan.

For every spec: a full-scale simulation from empty caches (150 s, the first 40 s
discarded) and the analytic model, lined up by :func:`geoshard.sim.modelcheck.compare`:
P99 queueing delay per pool (where at least 5 % of requests wait), P99 latency per
request type and client region (goal: within 10 %), and cache hit ratios per level
(goal: within 1 point; SIEVE levels are shown but not judged, the model treats SIEVE as
LRU). Prints the Markdown table of ``docs/planning.md`` (or the benchmark JSON with
``--json``: the share of judged lines within their bound, goal 1.0).

Run: ``python benchmarks/validate_plan.py`` (about 90 s on 2 cores)
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report, log, parser

from geoshard.sim.modelcheck import Comparison, compare
from geoshard.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SPECS = ("mmc", "warm", "hot", "pair", "residency", "sieve")


def _fmt(c: Comparison) -> str:
    unit = {"pool": "P99 wait, ms", "latency": "P99, ms", "cache": "hit ratio"}[c.what]
    if c.what == "cache":
        vals = f"{c.model:.4f} | {c.sim:.4f}"
        err = f"{c.error * 100:+.2f} pt"
    else:
        vals = f"{c.model:.3f} | {c.sim:.3f}"
        err = f"{c.error:+.1%}" if math.isfinite(c.error) else "-"
    if math.isnan(c.tolerance):
        why = "under 5 % wait" if c.what == "pool" else "SIEVE, not judged"
        err = f"({why})"
    else:
        err += " ok" if c.ok else " **MISS**"
    return f"| {c.spec} | {c.name} | {unit} | {vals} | {err} |"


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--duration", type=float, default=150.0)
    p.add_argument("--warmup", type=float, default=40.0)
    args = p.parse_args()
    rows: list[Comparison] = []
    for name in SPECS[:3] if args.quick else SPECS:
        spec = load_spec(REPO / "examples/validation/plan" / f"{name}.yaml")
        log(f"validate: {spec.name}")
        rows.extend(compare(spec, duration_s=args.duration, warmup_s=args.warmup))
    report = Report("plan_model_vs_simulator")
    for what, label in (
        ("pool", "pool_p99_wait_within_10pct"),
        ("latency", "latency_p99_within_10pct"),
        ("cache", "hit_ratio_within_1pt"),
    ):
        judged = [r for r in rows if r.what == what and not math.isnan(r.tolerance)]
        report.metrics[f"{what}_lines_judged"] = len(judged)
        report.ratio(label, sum(r.ok for r in judged) / len(judged) if judged else 0.0, 1.0)
    report.metrics["specs"] = len({r.spec for r in rows})
    if args.json:
        return report.emit(True)
    print("| spec | pool, row or level | what | model | simulator | error |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r.what != "load":
            print(_fmt(r))
    print()
    return report.emit(False)


if __name__ == "__main__":
    raise SystemExit(main())
