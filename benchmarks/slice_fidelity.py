"""A faithful slice against the whole topology: the same spec at scale 1 and at ``--scale``.

Runs ``geoshard.sim.run.simulate_spec`` twice (scale 1 for ``--full-duration`` seconds,
then the slice for ``--duration`` seconds; by default as long again as needed for as many
requests per pool) and compares, as the acceptance of the slice asks:

* per pool: utilisation within 5 %, mean and P99 queueing delay within 10 % (pools at
  least 30 % busy; a wait under 50 microseconds is no queue);
* per request type and client region: P99 latency within 10 %.

Prints a Markdown table of the worst pools and rows (``--json``: one object with both
runs' figures and the verdict of each check). Exit 0 when every check holds, 1 when one
does not.

Usage::

    python benchmarks/slice_fidelity.py examples/global.yaml --scale 0.01 \
        --full-duration 30 --duration 60
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from geoshard.sim.run import simulate_spec
from geoshard.spec import Spec, load_spec


def compare(full: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Per-pool and per-row deviations of ``part`` from ``full`` and what fails."""
    pools = []
    bad = []
    for name, a in sorted(full["metrics"]["nodes"].items()):
        b = part["metrics"]["nodes"][name]
        row = {
            "pool": name,
            "util_full": a["utilisation"],
            "util_slice": b["utilisation"],
            "wait_full": a["wait_ms"],
            "wait_slice": b["wait_ms"],
            "p99_full": a["wait_p99_ms"],
            "p99_slice": b["wait_p99_ms"],
        }
        row["util_dev"] = (b["utilisation"] / a["utilisation"] - 1) if a["utilisation"] else 0.0
        pools.append(row)
        if a["utilisation"] >= 0.05 and abs(row["util_dev"]) > 0.05:
            bad.append(f"{name} utilisation {a['utilisation']} vs {b['utilisation']}")
        if a["utilisation"] >= 0.3:
            for k in ("wait_ms", "wait_p99_ms"):
                if abs(b[k] - a[k]) > max(0.10 * a[k], 0.05):
                    bad.append(f"{name} {k} {a[k]} vs {b[k]}")
    rows = []
    for t, per in full["metrics"]["requests"].items():
        for region, a in per.items():
            b = part["metrics"]["requests"][t][region]
            dev = b["p99_ms"] / a["p99_ms"] - 1 if a["p99_ms"] else 0.0
            rows.append(
                {
                    "type": t,
                    "region": region,
                    "p99_full": a["p99_ms"],
                    "p99_slice": b["p99_ms"],
                    "dev": dev,
                }
            )
            if abs(dev) > 0.10:
                bad.append(f"{t}/{region} p99 {a['p99_ms']} vs {b['p99_ms']}")
    return {"pools": pools, "rows": rows, "failures": bad}


def _table(cmp: dict[str, Any], top: int) -> str:
    out = [
        "| pool | utilisation 1 / slice | mean wait ms 1 / slice | P99 wait ms 1 / slice |",
        "|---|---|---|---|",
    ]
    busiest = sorted(cmp["pools"], key=lambda r: -r["util_full"])[:top]
    for r in busiest:
        out.append(
            f"| {r['pool']} | {r['util_full']:.3f} / {r['util_slice']:.3f} | "
            f"{r['wait_full']:.3f} / {r['wait_slice']:.3f} | "
            f"{r['p99_full']:.3f} / {r['p99_slice']:.3f} |"
        )
    out += ["", "| request type | region | P99 ms 1 / slice | deviation |", "|---|---|---|---|"]
    for r in cmp["rows"]:
        out.append(
            f"| {r['type']} | {r['region']} | {r['p99_full']:.2f} / "
            f"{r['p99_slice']:.2f} | {r['dev']:+.1%} |"
        )
    return "\n".join(out)


def within_window(spec: Spec, full_s: float, slice_s: float) -> tuple[Spec, list[str]]:
    """The spec the slice runs: without the campaigns and fault events that start after
    the scale-1 run's ``full_s`` seconds (they never touched it, but would fall inside the
    slice's longer run), and the names of those dropped.

    Raises:
        ValueError: an event inside the scale-1 run, when the slice runs longer: its
            share of each run would differ, so the two cannot be compared per pool.
    """
    dropped: list[str] = []

    def keep(start: float, name: str) -> bool:
        if start >= full_s:
            dropped.append(name)
            return False
        if slice_s != full_s:
            raise ValueError(
                f"{name} starts at {start:g} s, inside the {full_s:g} s scale-1 run: run the "
                f"slice for as long (--duration {full_s:g}) or compare a spec without it"
            )
        return True

    keep_c = [c for c in spec.workload.campaigns if keep(c.start_s, f"campaign {c.name}")]
    keep_f = [
        e
        for e in spec.faults.events
        if keep(e.at_s, f"{e.kind} of {e.target or ' and '.join(e.between or [])}")
    ]
    workload = spec.workload.model_copy(update={"campaigns": keep_c})
    faults = spec.faults.model_copy(update={"events": keep_f})
    return spec.model_copy(update={"workload": workload, "faults": faults}), dropped


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", type=Path)
    p.add_argument("--scale", type=float, default=0.01, help="the slice (default 0.01)")
    p.add_argument(
        "--full-duration",
        type=float,
        default=30.0,
        help="simulated seconds at scale 1 (default 30)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="simulated seconds of the slice (default: full-duration / scale, "
        "as many requests per pool)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--full-result",
        type=Path,
        help="the result.json of a scale-1 run of the same spec and seed (e.g. "
        "geoshard simulate SPEC --duration 30 --out DIR) instead of running it again",
    )
    p.add_argument(
        "--workers", type=int, default=0, help="processes for each run (0: serial; as simulate)"
    )
    p.add_argument("--top", type=int, default=12, help="busiest pools in the table")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    spec = load_spec(args.spec)
    dur = args.duration or args.full_duration / args.scale
    t0 = time.perf_counter()
    if args.full_result:
        full = json.loads(args.full_result.read_text())
        if (full.get("scale"), full.get("seed")) != (1.0, args.seed):
            p.error(f"--full-result {args.full_result} is not a scale-1 run with seed {args.seed}")
        args.full_duration = float(full["duration_s"])
        dur = args.duration or args.full_duration / args.scale
    else:
        full, _ = simulate_spec(
            spec, seed=args.seed, duration_s=args.full_duration, workers=args.workers
        )
    t1 = time.perf_counter()
    try:
        sliced, dropped = within_window(spec, args.full_duration, dur)
    except ValueError as exc:
        p.error(str(exc))
    part, _ = simulate_spec(
        sliced, seed=args.seed, duration_s=dur, scale=args.scale, workers=args.workers
    )
    t2 = time.perf_counter()
    cmp = compare(full, part)
    head = (
        f"{args.spec.name}: scale 1 for {args.full_duration:g} s "
        f"({full['metrics']['arrivals']:,} requests, "
        f"{'from ' + str(args.full_result) if args.full_result else f'{t1 - t0:.0f} s'}) "
        f"against scale "
        f"{args.scale:g} for {dur:g} s ({part['metrics']['arrivals']:,} requests, "
        f"{t2 - t1:.0f} s), seed {args.seed}"
        + (
            f"; the slice runs without {', '.join(dropped)} (after the scale-1 run's end)"
            if dropped
            else ""
        )
    )
    if args.json:
        print(json.dumps({"title": head, **cmp}, sort_keys=True))
    else:
        print(head + "\n")
        print(_table(cmp, args.top))
        print(
            "\nchecks: "
            + ("all hold" if not cmp["failures"] else "FAIL\n  " + "\n  ".join(cmp["failures"]))
        )
    return 0 if not cmp["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
