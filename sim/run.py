"""Running a simulation and turning it into ``result.json`` and ``timeseries.csv``.

:func:`simulate_spec` scales the spec, runs :class:`~geoshard.sim.engine.Simulation` and
returns the result object (schema version 1) and the per-second time series. Everything
in the result except ``machine`` is a pure function of (spec, seed, scale, duration,
warm-up): keys are sorted, floats rounded, and no wall clock or host detail leaks out of
``machine``. :func:`write_run` writes the run directory.

Examples:
    >>> from geoshard.spec import load_spec
    >>> result, ts = simulate_spec(load_spec("examples/local.yaml"), seed=1, duration_s=5)  # doctest: +SKIP
    >>> result["metrics"]["residency"]["violations"]                                        # doctest: +SKIP
    0
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from geoshard import __version__
from geoshard.errors import ConfigError
from geoshard.spec import REQUEST_TYPES, Spec

from .engine import CACHE_LEVELS, EngineOptions, Simulation
from .metrics import RELATIVE_ERROR_BOUND, LogHistogram
from .workload import full_scale_load_factors, scale_spec

__all__ = ["SCHEMA_VERSION", "TIMESERIES_FIELDS", "cost_per_hour", "durability_note", "simulate_spec",
           "write_run"]

SCHEMA_VERSION = 1
TIMESERIES_FIELDS = ("t_s", "requests", "errors", "p99_ms", "hit_ratio", "in_fault")


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
    ack = ("writes are acknowledged when the primary and its in-region Redis replica have "
           "applied them (WAIT 1: one intra-region hop + the replica's service time)")
    if without and with_rep:
        ack += f"; in {', '.join(without)} (hot.replicas 0) after the primary alone"
    elif without:
        ack = "writes are acknowledged after the primary alone (hot.replicas 0)"
    return (f"durability: {ack}; the copies on the other ring replicas (other regions) are "
            "written asynchronously (they load those nodes' queues, not the request's "
            "latency), so a region lost before replication loses those writes there; reads "
            "that miss every cache go to the route's replica nearest the entry region")


def simulate_spec(spec: Spec, *, seed: int = 1, duration_s: float = 60.0, scale: float = 1.0,
                  warmup_s: float | None = None, options: EngineOptions | None = None,
                  on_second: Callable[[int], None] | None = None,
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Scale ``spec``, simulate it and build the result.

    Args:
        spec: the spec as loaded.
        seed: seed of every random stream.
        duration_s: simulated seconds of arrivals (> 0).
        scale: fraction of shards, traffic and keys to simulate, in (0, 1].
        warmup_s: measurements start here; default 10 % of the duration.
        options: engine knobs.
        on_second: progress callback, called with each simulated second.

    Returns:
        ``(result, timeseries)``; ``result["machine"]`` is the only non-deterministic part.

    Raises:
        ConfigError: a bad duration, warm-up or scale.
    """
    if not (duration_s > 0) or not math.isfinite(duration_s):
        raise ConfigError(f"--duration (={duration_s}) must be a number of seconds > 0, e.g. 60")
    if warmup_s is None:
        warmup_s = round(duration_s * 0.1, 3)
    if not (0 <= warmup_s < duration_s):
        raise ConfigError(f"--warmup (={warmup_s}) must be >= 0 and below --duration "
                          f"(={duration_s})")
    eff, assumptions = scale_spec(spec, scale)
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    t_wall = time.perf_counter()
    cpu0 = time.process_time()
    sim = Simulation(eff, seed, duration_s, warmup_s, options)
    if sim.stream.silent_regions:
        assumptions.append("no traffic from " + ", ".join(sim.stream.silent_regions)
                           + ": their jurisdiction has no users in users_by_jurisdiction")
    assumptions.append(f"latency quantiles come from log-bucketed histograms: relative error "
                       f"<= {RELATIVE_ERROR_BOUND:.4%}; means are exact")
    assumptions.append(durability_note(eff))
    assumptions.append(f"measurements start after a warm-up of {warmup_s:g} s; the time series "
                       "covers the whole run")
    sim.run(on_second)
    wall = time.perf_counter() - t_wall
    cpu = time.process_time() - cpu0
    result = _result(spec, eff, sim, seed, scale, duration_s, warmup_s, assumptions)
    result["machine"] = {
        "hostname": socket.gethostname(), "started_at": started, "wall_s": round(wall, 3),
        "cpu": {"model": platform.processor() or platform.machine(), "count": os.cpu_count(),
                "process_s": round(cpu, 3)},
        "simulated_requests_per_wall_s": round(sim.arrived / wall, 1) if wall > 0 else None,
    }
    return result, _timeseries(sim, eff)


def _result(spec: Spec, eff: Spec, sim: Simulation, seed: int, scale: float, duration_s: float,
            warmup_s: float, assumptions: list[str]) -> dict[str, Any]:
    regions = sim.regions
    slo = eff.slo
    requests: dict[str, Any] = {}
    failures: list[str] = []
    for ti, t in enumerate(REQUEST_TYPES):
        per: dict[str, Any] = {}
        total_h = LogHistogram()
        total_within = total_failed = 0
        for ri, r in enumerate(regions):
            h = sim.hist[ti][ri]
            fails = sim.failed[ti][ri]
            n = h.count + fails
            if n == 0:
                continue
            total_h.merge(h)
            total_within += sim.within[ti][ri]
            total_failed += fails
            per[r] = _lat(h, fails, sim.within[ti][ri])
        if total_h.count + total_failed == 0:
            continue
        allr = _lat(total_h, total_failed, total_within)
        per["all"] = allr
        requests[t] = per
        target = slo.latency.get(t)
        if target is not None:
            if allr["p50_ms"] > target.p50_ms:
                failures.append(f"{t}: p50 {allr['p50_ms']} ms > {target.p50_ms} ms")
            if allr["p99_ms"] > target.p99_ms:
                failures.append(f"{t}: p99 {allr['p99_ms']} ms > {target.p99_ms} ms")
            if allr["slo_attainment"] < slo.attainment:
                failures.append(f"{t}: {allr['slo_attainment']:.4%} of requests within "
                                f"{target.p99_ms} ms (incl. failed), below {slo.attainment:.2%}")
    caches = {}
    for lvl in CACHE_LEVELS:
        h, m = sim.cache_hits[lvl], sim.cache_misses[lvl]
        if h + m:
            caches[lvl] = {"hits": h, "misses": m, "hit_ratio": _r(h / (h + m))}
    window = sim.duration_ms - sim.warm_ms
    factors = full_scale_load_factors(spec, eff, scale)
    nodes = {}
    for kind, pools in (("api", sim.api), ("hot", sim.hot), ("warm", sim.warm)):
        for pool in pools.values():
            per = pool.capacity * window
            offered = pool.demand_ms / per if per > 0 else 0.0
            nodes[pool.name] = {
                "capacity": pool.capacity,
                "requests": pool.grants,
                "utilisation": _r(pool.busy_ms / per) if per > 0 else 0.0,
                "offered_load": _r(offered),
                "full_scale_offered_load": _r(offered * factors[(pool.region, kind)]),
                "max_queue": pool.max_queue,
                "wait_ms": _r(pool.wait_ms / pool.grants) if pool.grants else 0.0,
            }
    c = sim.counts
    counts = {"degraded": c.degraded, "failed": c.failed, "shed": c.shed, "spilled": c.spilled,
              "stale_route_errors": c.stale_route_errors, "no_allowed_region": c.no_allowed_region,
              "degraded_by_stage": dict(c.degraded_by_stage)}
    residency = {"checks": sim.audit_checks, "violations": sim.audit_violations,
                 "examples": list(sim.audit_examples)}
    if sim.audit_violations:
        failures.append(f"residency: {sim.audit_violations} violation(s)")
    scaled_cost = cost_per_hour(eff)
    cost = {"scaled_model": scaled_cost, "full_scale": cost_per_hour(spec),
            "full_scale_extrapolated": _r(scaled_cost["total"] / scale)}
    faults = []
    det = eff.faults.detection_delay_s
    for f in eff.faults.events:
        d = {"kind": f.kind, "at_s": f.at_s, "duration_s": f.duration_s,
             "end_s": _r(f.at_s + f.duration_s),
             "target": f.target if f.target else "<->".join(f.between or []),
             "router_sees_at_s": None if f.kind == "latency_spike" else _r(f.at_s + det),
             "router_sees_end_at_s": None if f.kind == "latency_spike"
             else _r(f.at_s + f.duration_s + det)}
        if f.kind == "latency_spike":
            d["extra_ms"] = f.extra_ms
        faults.append(d)
    return {
        "schema_version": SCHEMA_VERSION,
        "spec": eff.model_dump(mode="json"),
        "spec_name": spec.name,
        "seed": seed,
        "scale": scale,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "assumptions": assumptions,
        "versions": {"geoshard": __version__, "simpy": simpy.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "metrics": {
            "requests": requests,
            "arrivals": sim.arrived,
            "caches": caches,
            "nodes": nodes,
            "counts": counts,
            "residency": residency,
            "cost_per_hour_usd": cost,
            "slo": {"passed": not failures, "failures": failures},
            "health_epochs": sim.epochs,
            "entry_regions": _entry_table(sim),
        },
        "faults": faults,
    }


def _entry_table(sim: Simulation) -> dict[str, dict[str, int]]:
    """client region -> entry (processing) region -> requests, after warm-up."""
    out: dict[str, dict[str, int]] = {}
    for (c, e), n in sorted(sim.served_by.items()):
        out.setdefault(c, {})[e] = n
    return out


def _lat(h: LogHistogram, failed: int, within: int) -> dict[str, Any]:
    from .report import cdf_points  # report imports matplotlib lazily; no cycle

    p50, p95, p99, p999 = h.quantiles((0.5, 0.95, 0.99, 0.999))
    n = h.count + failed
    return {"count": h.count, "failed": failed, "p50_ms": _r(p50, 5), "p95_ms": _r(p95, 5),
            "p99_ms": _r(p99, 5), "p999_ms": _r(p999, 5), "mean_ms": _r(h.mean, 6),
            "slo_attainment": _r(within / n) if n else 0.0, "cdf": cdf_points(h)}


def _timeseries(sim: Simulation, eff: Spec) -> list[dict[str, Any]]:
    rows = []
    windows = [(f.at_s, f.at_s + f.duration_s) for f in eff.faults.events]
    for s in range(len(sim.ts_req)):
        if s * 1000.0 >= sim.duration_ms:
            break
        look = sim.ts_lookups[s]
        in_fault = any(a < s + 1 and s < b for a, b in windows)
        rows.append({"t_s": s, "requests": sim.ts_req[s], "errors": sim.ts_err[s],
                     "p99_ms": _r(sim.ts_hist[s].quantile(0.99), 5),
                     "hit_ratio": _r(sim.ts_hits[s] / look) if look else 0.0,
                     "in_fault": int(in_fault)})
    return rows


def write_run(out_dir: str | Path, result: dict[str, Any], timeseries: list[dict[str, Any]]) -> Path:
    """Write ``result.json`` and ``timeseries.csv`` (and the report, when available).

    The report (CSV, PNG, report.html) comes from :mod:`geoshard.sim.report` when that
    module exists; without it only the two files are written.
    """
    import importlib.util

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n",
                                   encoding="utf-8")
    with (d / "timeseries.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(TIMESERIES_FIELDS), lineterminator="\n")
        w.writeheader()
        w.writerows(timeseries)
    if importlib.util.find_spec("geoshard.sim.report") is not None:
        from geoshard.sim import report  # type: ignore[attr-defined]

        report.write_report(d, result, timeseries)
    return d


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()
