"""The verdict of a simulation: does the topology meet its SLOs, honestly?

A capacity planner acts on this answer, so it errs towards failing:

* **latency** per request type **and per client region** (the worst region decides; the
  ``all`` row is checked too): P50 and P99 within the type's targets, and the share of
  requests within the P99 target at least ``slo.attainment``. Failed and shed requests
  count as misses; so do **degraded** answers (a fallback at a stage deadline) unless
  the spec sets ``accept_degraded`` for that type;
* **capacity**: every pool's offered load in every phase of the run (between changes of
  rate or health, after the warm-up) stays at or below ``slo.load_ceiling``, with room
  for its sampling error (two standard errors: a scaled run with few requests per node
  cannot pass on luck); a pool above it is named with its region, its load and the node
  count that would bring it under the ceiling;
* **residency**: the audit found no personal datum stored or processed outside the
  regions its jurisdiction allows.

:func:`judge` returns the verdict as a dict; the terminal, ``result.json`` (``verdict``),
``report.html`` and the exit code all show this one object.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from geoshard.spec import Spec

__all__ = ["MIN_PHASE_S", "judge", "phases"]

#: phases shorter than this (whole seconds) are too short to judge a pool's load on.
MIN_PHASE_S = 2


def phases(
    change_times_ms: list[float], warmup_s: float, duration_s: float
) -> list[tuple[int, int]]:
    """Whole-second phases ``[start, end)`` of the measured window between changes.

    A phase holds the whole seconds between two changes of rate or health; seconds cut
    by a change are left out of both sides.
    """
    cuts = sorted(
        {
            warmup_s,
            duration_s,
            *(t / 1000.0 for t in change_times_ms if warmup_s < t / 1000.0 < duration_s),
        }
    )
    out = []
    for a, b in itertools.pairwise(cuts):
        lo, hi = math.ceil(a), math.floor(b)
        if hi > lo:
            out.append((lo, hi))
    return out


def _nodes_needed(kind: str, count: int, load: float, ceiling: float) -> int:
    return max(count + 1, math.ceil(count * load / ceiling))


def judge(spec: Spec, metrics: dict[str, Any]) -> dict[str, Any]:
    """The verdict on one run's metrics (as :func:`geoshard.sim.run.simulate_spec` builds them).

    Returns:
        ``{"passed": bool, "failures": [{"kind", "name", "region", "value", "limit",
        "message"}], "checks": {...}}``; ``failures`` name every failing row and pool.
    """
    slo = spec.slo
    failures: list[dict[str, Any]] = []
    rows = 0
    for t, per in metrics["requests"].items():
        target = slo.latency.get(t)
        if target is None:
            continue
        for region, v in per.items():
            if v["count"] + v["failed"] == 0:
                continue
            rows += 1
            where = "all regions" if region == "all" else region
            for q, lim in (("p50", target.p50_ms), ("p99", target.p99_ms)):
                val = v[f"{q}_ms"]
                if v["count"] and val > lim:
                    failures.append(
                        {
                            "kind": "latency",
                            "name": f"{t}/{region}",
                            "region": region,
                            "value": val,
                            "limit": lim,
                            "message": f"{t} in {where}: {q} {val:g} ms > {lim:g} ms",
                        }
                    )
            att = v["slo_attainment"]
            if att < slo.attainment:
                why = []
                if v["failed"]:
                    why.append(f"{v['failed']:,} failed or shed")
                if v.get("degraded") and not target.accept_degraded:
                    why.append(f"{v['degraded']:,} degraded answers count as misses")
                failures.append(
                    {
                        "kind": "attainment",
                        "name": f"{t}/{region}",
                        "region": region,
                        "value": att,
                        "limit": slo.attainment,
                        "message": (
                            f"{t} in {where}: {att:.2%} of requests within "
                            f"{target.p99_ms:g} ms, below {slo.attainment:.2%}"
                            + (f" ({'; '.join(why)})" if why else "")
                        ),
                    }
                )
    ceiling = slo.load_ceiling
    pools = 0
    for name, n in sorted(metrics["nodes"].items()):
        pools += 1
        load = n.get("peak_offered_load", n["offered_load"])
        se = n.get("peak_offered_load_se", 0.0)
        if load + 2 * se > ceiling:
            region, kind = n["region"], n["kind"]
            reg = spec.regions[region]
            if kind == "api":
                count, unit = reg.api.servers, "API servers"
            elif kind == "warm":
                count, unit = reg.warm.nodes, "warm nodes"
            else:
                count, unit = reg.hot.nodes, "hot nodes"
            need = _nodes_needed(kind, count, load, ceiling)
            phase = n.get("peak_phase") or ""
            hint = (
                f"{need} {unit} in {region} (now {count})"
                if kind != "hot"
                else f"about {need} {unit} in {region} (now {count}), or rebalance its keys"
            )
            if load - 2 * se > ceiling or se == 0:
                msg = (
                    f"{name} runs at {load:.1%} offered load"
                    + (f" ({phase})" if phase else "")
                    + f", above the {ceiling:.0%} ceiling: {hint} would bring it under"
                )
            else:
                msg = (
                    f"{name} may be above the {ceiling:.0%} ceiling: {load:.1%} +- {2 * se:.1%} "
                    f"offered load" + (f" ({phase})" if phase else "") + " from too few "
                    "simulated requests to tell; raise --scale or --duration to judge it"
                    + (f" ({hint} would bring it under)" if load > ceiling else "")
                )
            failures.append(
                {
                    "kind": "capacity",
                    "name": name,
                    "region": region,
                    "value": load,
                    "limit": ceiling,
                    "nodes_needed": need,
                    "uncertainty": 2 * se,
                    "message": msg,
                }
            )
    res = metrics["residency"]
    if res["violations"]:
        failures.append(
            {
                "kind": "residency",
                "name": "residency",
                "region": "",
                "value": res["violations"],
                "limit": 0,
                "message": f"residency: {res['violations']:,} violation(s), e.g. "
                + "; ".join(res["examples"][:3]),
            }
        )
    order = {"residency": 0, "capacity": 1, "attainment": 2, "latency": 3}
    failures.sort(key=lambda f: (order[f["kind"]], f["name"]))
    return {
        "passed": not failures,
        "failures": failures,
        "checks": {
            "latency_rows": rows,
            "pools": pools,
            "load_ceiling": ceiling,
            "attainment": slo.attainment,
        },
    }
