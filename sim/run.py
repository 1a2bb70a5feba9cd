"""Running a simulation and turning it into ``result.json`` and ``timeseries.csv``.

:func:`simulate_spec` runs the spec (its independent parts serially or on Ray,
:mod:`geoshard.sim.parallel`) at a scale and returns the result object (schema version
2) and the per-second time series. Everything in the result except ``machine`` is a
pure function of (spec, seed, scale, duration, warm-up, warm start): keys are sorted,
floats rounded, and no wall clock or host detail leaks out of ``machine``.
:func:`write_run` writes the run directory.

Examples:
    >>> from geoshard.spec import load_spec
    >>> result, ts = simulate_spec(load_spec("examples/local.yaml"), seed=1, duration_s=5)  # doctest: +SKIP
    >>> result["verdict"]["passed"], result["metrics"]["residency"]["violations"]           # doctest: +SKIP
    (True, 0)
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from geoshard import __version__, native
from geoshard.errors import ConfigError
from geoshard.spec import REQUEST_TYPES, Spec

from .collect import CACHE_LEVELS, SimResults
from .engine import EngineOptions, populations
from .faults import Timeline
from .metrics import RELATIVE_ERROR_BOUND, LogHistogram
from .parallel import LEAD_S, Task, plan_tasks, simulate_parts
from .population import HEAD_NODE_ERROR
from .verdict import MIN_PHASE_S, judge, phases
from .workload import expected_requests, rate_segments, start_of_day

__all__ = [
    "SCHEMA_VERSION",
    "TIMESERIES_FIELDS",
    "cost_per_hour",
    "durability_note",
    "simulate_spec",
    "write_run",
]

SCHEMA_VERSION = 2
TIMESERIES_FIELDS = (
    "t_s",
    "requests",
    "requests_per_s_full_scale",
    "errors",
    "p99_ms",
    *(f"p99_{t}_ms" for t in REQUEST_TYPES),
    "hit_ratio",
    "in_fault",
)


def _r(x: float, digits: int = 6) -> float:
    """Round to ``digits`` significant digits (stable text in JSON)."""
    if x == 0 or not math.isfinite(x):
        return 0.0 if x == 0 else x
    return float(f"{x:.{digits}g}")


def cost_per_hour(spec: Spec) -> dict[str, float]:
    """USD per hour of a spec's API servers, hot nodes (primaries + replicas) and warm nodes."""
    api = hot = warm = 0.0
    for reg in spec.regions.values():
        c = reg.costs
        api += c.api_server_hour * reg.api.servers
        hot += c.hot_node_hour * reg.hot.nodes * (1 + reg.hot.replicas)
        warm += c.warm_node_hour * reg.warm.nodes
    return {"api": _r(api), "hot": _r(hot), "warm": _r(warm), "total": _r(api + hot + warm)}


def durability_note(spec: Spec) -> str:
    """One sentence on how reads and writes use the replicas (stored in the assumptions)."""
    with_rep = sorted(r for r, reg in spec.regions.items() if reg.hot.replicas >= 1)
    without = sorted(r for r, reg in spec.regions.items() if reg.hot.replicas < 1)
    ack = (
        "writes are acknowledged when the primary and its in-region Redis replica have "
        "applied them (WAIT 1: one intra-region hop + the replica's service time)"
    )
    if without and with_rep:
        ack += f"; in {', '.join(without)} (hot.replicas 0) after the primary alone"
    elif without:
        ack = "writes are acknowledged after the primary alone (hot.replicas 0)"
    return (
        f"durability: {ack}; the copies on the other ring replicas (other regions) are "
        "written asynchronously (they load those nodes' queues, not the request's "
        "latency), so a region lost before replication loses those writes there; reads "
        "that miss every cache go to the route's replica nearest the entry region"
    )


def _scale_notes(spec: Spec, scale: float, seed: int) -> list[str]:
    if scale >= 1:
        return ["scale 1: every node, user and request of the topology is simulated"]
    pops = populations(spec, scale, seed)
    heads = ", ".join(
        f"{j}: {p.head:,} users, {p.head_share:.1%} of requests, "
        f"{p.materialize_head:.4f} of them in full"
        for j, p in pops.items()
    )
    return [
        (
            f"scale {scale:g} (a faithful slice): every node of every pool is simulated with "
            f"{scale:g} of its requests and service times stretched by 1/{scale:g}, so per-node "
            "arrival rate x service time (offered load), utilisation and queue lengths are those "
            f"of the full topology and queueing delays are measured in full-scale time "
            f"(exact for Poisson arrivals, which a thinned Poisson stream is)"
        ),
        (
            f"the slice's users: every {1 / scale:g}-th user by popularity (systematic sample) with "
            f"all of their requests, plus the most popular users, each of their requests "
            f"simulated with the probability below and their cache lookups decided by the "
            f"steady-state model; the head is large enough that sampling the rest changes a hot "
            f"node's load by at most {HEAD_NODE_ERROR:.0%} (one standard deviation) "
            f"({heads}); cache capacities are the head's residents + {scale:g} x the rest, "
            "so every cache holds the same share of its key space as at full scale (SHARDS-style "
            "spatial sampling); request counts are the slice's: x 1/scale for full-scale rates"
        ),
    ]


def _task_notes(tasks: list[Task]) -> list[str]:
    notes = []
    lead = max((t.lead_s for t in tasks if t.segment == 0), default=0.0)
    if lead:
        notes.append(
            f"the slice starts {lead:g} s before time 0, unmeasured: a recommend's "
            "second API visit joins after its dilated gap, and the visits of requests "
            "from before time 0 are part of the steady state"
        )
    cut = max((t.segment + 1 for t in tasks), default=1)
    if cut > 1:
        notes.append(
            f"large parts are simulated as up to {cut} independent time segments "
            f"(on Ray when there are several workers), each warm-started with "
            f"{LEAD_S} s of unmeasured lead-in for its queues; a queue above 100 % "
            "load restarts at each segment (such a run fails its capacity gate)"
        )
    return notes


def _common_notes(spec: Spec, warm: bool, warmup_s: float, options: EngineOptions) -> list[str]:
    w = spec.workload
    sod = start_of_day(spec)
    step = w.day_s / len(w.diurnal)
    k = int(sod // step) % len(w.diurnal)
    origin = (
        "workload.start_of_day_s"
        if w.start_of_day_s is not None
        else "the busiest step of the diurnal curve"
    )
    notes = [
        (
            f"the run starts {sod:g} s into the diurnal cycle ({origin}: multiplier "
            f"{w.diurnal[k]:g}); faults and campaigns are timed from the run's start"
        ),
        (
            "clients of a region are users of that region's jurisdiction; the per-region arrival "
            "rate is peak_qps x diurnal step x campaign multipliers"
        ),
        (
            "a request enters the nearest region that may process every data class it touches "
            "(a recommend: user_features and user_embeddings), spills at the entry when its API "
            f"queue is longer than {options.spill_queue_factor:g} x workers, and is shed when no "
            f"region has room and the queue passes {options.shed_queue}"
        ),
        (
            "API workers are CPU slots held only for the API service time (asynchronous I/O); "
            "caches and networks are pure delays; API, hot and warm pools are FIFO queues"
        ),
        (
            "a request walks the caches as it joins its entry region's API (the API's service "
            "and the cache delays follow); caches are filled when a miss is sent to the tier (a "
            "concurrent miss of the same key hits, like single-flight); writes invalidate before "
            "they reach the primary"
        ),
        (
            "latencies are grouped by the client's region; failed and shed requests carry no "
            "latency but count against SLO attainment; degraded answers count against it too "
            "unless the type's accept_degraded is set"
        ),
        (
            f"latency quantiles come from log-bucketed histograms: relative error "
            f"<= {RELATIVE_ERROR_BOUND:.4%}; means are exact"
        ),
        durability_note(spec),
        (
            f"measurements start after a warm-up of {warmup_s:g} s; the time series covers the "
            "whole run"
        ),
    ]
    if warm:
        cal = (
            "; the model is calibrated first by a keyed replay of the workload through the "
            "real caches (a SHARDS sample): per popularity band its hit ratios, and how "
            "fast untouched residents leave"
            if options.calibrate
            else "; not calibrated"
        )
        notes.insert(
            1,
            "warm start: every cache begins at its steady state, drawn lazily per "
            "key from the analytic model (Che's characteristic time with TTLs "
            "and write invalidations; L1 -> L2 -> regional as a filtered stream; "
            f"SIEVE modelled as LRU){cal}; see metrics.cache_model in the result",
        )
    else:
        notes.insert(1, "cold start: every cache begins empty (--cold)")
    return notes


def simulate_spec(
    spec: Spec,
    *,
    seed: int = 1,
    duration_s: float = 60.0,
    scale: float = 1.0,
    warmup_s: float | None = None,
    options: EngineOptions | None = None,
    on_progress: Callable[[float], None] | None = None,
    workers: int = 0,
    ray_address: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Simulate ``spec`` at ``scale`` and build the result and its verdict.

    Args:
        spec: the spec as loaded.
        seed: seed of every random stream (>= 0).
        duration_s: simulated seconds of arrivals (> 0).
        scale: the slice, in (0, 1] (1 = the whole topology).
        warmup_s: measurements start here; default 10 % of the duration with a cold
            start, 0 with a warm start.
        options: engine knobs (``warm_start``, ...).
        on_progress: called with the fraction of the run done.
        workers: parts simulated at once (0 = choose; 1 = serial; see
            :func:`~geoshard.sim.parallel.simulate_parts`).
        ray_address: an existing Ray cluster.

    Returns:
        ``(result, timeseries)``; ``result["machine"]`` is the only non-deterministic part.

    Raises:
        ConfigError: a bad duration, warm-up, scale or seed.
    """
    options = options or EngineOptions()
    if not (duration_s > 0) or not math.isfinite(duration_s):
        raise ConfigError(f"--duration (={duration_s}) must be a number of seconds > 0, e.g. 60")
    if not (0 < scale <= 1) or not math.isfinite(scale):
        raise ConfigError(
            f"--scale (={scale}) must be in (0, 1]; e.g. 0.01 simulates a "
            "faithful 1 % slice of a planet-sized spec"
        )
    if seed < 0:
        raise ConfigError(f"--seed (={seed}) must be >= 0")
    if warmup_s is None:
        warmup_s = 0.0 if options.warm_start else round(duration_s * 0.1, 3)
    if not (0 <= warmup_s < duration_s):
        raise ConfigError(
            f"--warmup (={warmup_s}) must be >= 0 and below --duration (={duration_s})"
        )
    assumptions = (
        _scale_notes(spec, scale, seed)
        + _common_notes(spec, options.warm_start, warmup_s, options)
        + _task_notes(plan_tasks(spec, duration_s, warmup_s, scale, options))
    )
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    t_wall = time.perf_counter()
    cpu0 = time.process_time()
    res, info = simulate_parts(
        spec,
        seed,
        duration_s,
        warmup_s,
        scale,
        options,
        workers,
        ray_address,
        on_progress,
        expected_requests(spec, duration_s, scale),
    )
    wall = time.perf_counter() - t_wall
    cpu = time.process_time() - cpu0
    result = _result(spec, res, seed, scale, duration_s, warmup_s, assumptions, options)
    result["machine"] = {
        "hostname": socket.gethostname(),
        "started_at": started,
        "wall_s": round(wall, 3),
        "cpu": {
            "model": platform.processor() or platform.machine(),
            "count": os.cpu_count(),
            "process_s": round(cpu, 3),
        },
        "executor": info,
        # the compiled simulator modules, or why the sources ran (core/native.py)
        "engine": native.status(),
        "simulated_requests_per_wall_s": round(res.arrived / wall, 1) if wall > 0 else None,
        "simulated_s_per_wall_s": round(duration_s / wall, 4) if wall > 0 else None,
    }
    return result, _timeseries(res, spec, duration_s, scale)


def _lat(h: LogHistogram, failed: int, within: int, degraded: int) -> dict[str, Any]:
    from .report import cdf_points  # report imports matplotlib lazily; no cycle

    p50, p95, p99, p999 = h.quantiles((0.5, 0.95, 0.99, 0.999))
    n = h.count + failed
    return {
        "count": h.count,
        "failed": failed,
        "degraded": degraded,
        "degraded_share": _r(degraded / h.count) if h.count else 0.0,
        "p50_ms": _r(p50, 5),
        "p95_ms": _r(p95, 5),
        "p99_ms": _r(p99, 5),
        "p999_ms": _r(p999, 5),
        "mean_ms": _r(h.mean, 6),
        "slo_attainment": _r(within / n) if n else 0.0,
        "cdf": cdf_points(h),
    }


def _service_cv2(spec: Spec, region: str, kind: str) -> float:
    """Squared coefficient of variation of a pool's service time (its spec distribution)."""
    from geoshard.spec import ConstantDist, ExponentialDist, GammaDist, LognormalDist

    reg = spec.regions[region]
    d = (
        reg.api.service_time
        if kind == "api"
        else reg.hot.service_time
        if kind == "hot"
        else reg.warm.service_time
    )
    if isinstance(d, ExponentialDist):
        return 1.0
    if isinstance(d, LognormalDist):
        return math.expm1(d.sigma * d.sigma)
    if isinstance(d, GammaDist):
        return d.cv * d.cv
    assert isinstance(d, ConstantDist)
    return 0.0


def _phase_label(a: int, b: int) -> str:
    return f"{a}-{b} s"


def _result(
    spec: Spec,
    res: SimResults,
    seed: int,
    scale: float,
    duration_s: float,
    warmup_s: float,
    assumptions: list[str],
    options: EngineOptions,
) -> dict[str, Any]:
    requests: dict[str, Any] = {}
    for t in REQUEST_TYPES:
        per: dict[str, Any] = {}
        total = LogHistogram()
        within = failed = degraded = 0
        for r in res.regions:
            h = res.hist.get((t, r))
            if h is None:
                continue
            total.merge(h)
            w, f, d = res.within[(t, r)], res.failed[(t, r)], res.degraded[(t, r)]
            within, failed, degraded = within + w, failed + f, degraded + d
            per[r] = _lat(h, f, w, d)
        if total.count + failed == 0:
            continue
        per["all"] = _lat(total, failed, within, degraded)
        requests[t] = per
    caches = {}
    for lvl in CACHE_LEVELS:
        hits, misses = res.cache_hits.get(lvl, 0), res.cache_misses.get(lvl, 0)
        if hits + misses:
            caches[lvl] = {"hits": hits, "misses": misses, "hit_ratio": _r(hits / (hits + misses))}
    timeline = Timeline.from_spec(spec)
    cuts = sorted({a for a, _, _ in rate_segments(spec, duration_s * 1000.0, timeline.times)})
    spans = phases(cuts, warmup_s, duration_s)
    judged = [p for p in spans if p[1] - p[0] >= MIN_PHASE_S] or spans
    window = (duration_s - warmup_s) * 1000.0
    nodes = {}
    for name, ps in sorted(res.pools.items()):
        cap_ms = ps.capacity * window
        offered = ps.demand_ms / cap_ms if cap_ms > 0 else 0.0
        cv2 = _service_cv2(spec, ps.region, ps.kind)
        peak, peak_se, peak_phase, upper = offered, 0.0, "", -1.0
        for a, b in judged:
            demand = sum(ps.demand_by_second[a:b])
            joins = sum(ps.joins_by_second[a:b])
            load = demand / (ps.capacity * 1000.0 * (b - a))
            # Poisson joins with random service: relative sampling error sqrt((1 + cv^2) / n)
            se = load * math.sqrt((1.0 + cv2) / joins) if joins else (math.inf if load else 0.0)
            if load + 2 * se > upper:
                upper = load + 2 * se
                peak, peak_se, peak_phase = load, se, _phase_label(a, b)
        nodes[name] = {
            "kind": ps.kind,
            "region": ps.region,
            "capacity": ps.capacity,
            "requests": ps.requests,
            "utilisation": _r(ps.busy_ms / cap_ms) if cap_ms > 0 else 0.0,
            "offered_load": _r(offered),
            "peak_offered_load": _r(peak),
            "peak_offered_load_se": _r(peak_se),
            "peak_phase": peak_phase,
            "max_queue": ps.max_queue,
            "wait_ms": _r(ps.wait_ms / ps.requests) if ps.requests else 0.0,
            "wait_p99_ms": _r(ps.wait_quantile(0.99), 5),
        }
    c = res.counts
    counts = {
        "degraded": c.degraded,
        "failed": c.failed,
        "shed": c.shed,
        "spilled": c.spilled,
        "stale_route_errors": c.stale_route_errors,
        "no_allowed_region": c.no_allowed_region,
        "degraded_by_stage": dict(c.degraded_by_stage),
        "cache_only": res.cache_only,
    }
    residency = {
        "checks": res.audit_checks,
        "violations": res.audit_violations,
        "examples": list(res.audit_examples),
    }
    faults = []
    det = spec.faults.detection_delay_s
    for fault in spec.faults.events:
        spike = fault.kind == "latency_spike"
        row: dict[str, Any] = {
            "kind": fault.kind,
            "at_s": fault.at_s,
            "duration_s": fault.duration_s,
            "end_s": _r(fault.at_s + fault.duration_s),
            "target": fault.target if fault.target else "<->".join(fault.between or []),
            "router_sees_at_s": None if spike else _r(fault.at_s + det),
            "router_sees_end_at_s": None if spike else _r(fault.at_s + fault.duration_s + det),
        }
        if spike:
            row["extra_ms"] = fault.extra_ms
        faults.append(row)
    model = {
        r: {
            lvl: {
                k: (
                    v
                    if isinstance(v, bool)
                    else _r(v)
                    if math.isfinite(v)
                    else ("inf" if v > 0 else None)
                )
                for k, v in row.items()
            }
            for lvl, row in levels.items()
        }
        for r, levels in sorted(res.cache_model.items())
    }
    metrics: dict[str, Any] = {
        "requests": requests,
        "arrivals": res.arrived,
        "caches": caches,
        "cache_model": model,
        "nodes": nodes,
        "phases": [{"start_s": a, "end_s": b, "judged": (a, b) in judged} for a, b in spans],
        "counts": counts,
        "residency": residency,
        "cost_per_hour_usd": cost_per_hour(spec),
        "health_epochs": res.epochs,
        "entry_regions": _entry_table(res),
    }
    verdict = judge(spec, metrics)
    metrics["slo"] = {
        "passed": verdict["passed"],
        "failures": [f["message"] for f in verdict["failures"]],
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "spec": spec.model_dump(mode="json"),
        "spec_name": spec.name,
        "seed": seed,
        "scale": scale,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "warm_start": options.warm_start,
        "assumptions": assumptions,
        "versions": {
            "geoshard": __version__,
            "simpy": simpy.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "verdict": verdict,
        "metrics": metrics,
        "faults": faults,
    }


def _entry_table(res: SimResults) -> dict[str, dict[str, int]]:
    """client region -> entry (processing) region -> requests, after warm-up."""
    out: dict[str, dict[str, int]] = {}
    for (c, e), n in sorted(res.served_by.items()):
        out.setdefault(c, {})[e] = n
    return out


def _timeseries(
    res: SimResults, spec: Spec, duration_s: float, scale: float
) -> list[dict[str, Any]]:
    rows = []
    windows = [(f.at_s, f.at_s + f.duration_s) for f in spec.faults.events]
    for s in range(res.seconds):
        if s >= duration_s:
            break
        look = res.ts_lookups[s]
        total = LogHistogram()
        row: dict[str, Any] = {
            "t_s": s,
            "requests": res.ts_requests[s],
            "requests_per_s_full_scale": _r(res.ts_requests[s] / scale),
            "errors": res.ts_errors[s],
        }
        for t in REQUEST_TYPES:
            h = res.ts_hist[t][s]
            total.merge(h)
            row[f"p99_{t}_ms"] = _r(h.quantile(0.99), 5)
        row["p99_ms"] = _r(total.quantile(0.99), 5)
        row["hit_ratio"] = _r(res.ts_hits[s] / look) if look else 0.0
        row["in_fault"] = int(any(a < s + 1 and s < b for a, b in windows))
        rows.append(row)
    return rows


def write_run(
    out_dir: str | Path, result: dict[str, Any], timeseries: list[dict[str, Any]]
) -> Path:
    """Write ``result.json``, ``timeseries.csv`` and the report (CSV, PNG, report.html)."""
    from . import report

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "result.json").write_text(
        json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    with (d / "timeseries.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(TIMESERIES_FIELDS), lineterminator="\n")
        w.writeheader()
        w.writerows(timeseries)
    report.write_report(d, result, timeseries)
    return d
