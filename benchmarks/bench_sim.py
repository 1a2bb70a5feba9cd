"""Simulator speed and memory, against bare SimPy measured in the same run.

* ``full_path_req_per_s``: simulated requests per wall second of ``geoshard.sim`` on the
  full path of ``examples/local.yaml`` (routing, caches, faults, audit, metrics), over
  ``Simulation.run``; ``full_path_build_s`` is the fixed cost of loading the spec and
  building the model, and ``full_path_incl_build_req_per_s`` the rate with it included.
* ``bare_mm8_req_per_s``: an open M/M/8 queue in bare SimPy, one process per request
  (sim-anchors §4 model (b)); ``bare_timeout_events_per_s``: a one-process timeout loop.
* ``peak_rss_mib``: peak RSS of a subprocess simulating 10 M requests (1 M with
  ``--quick``) of ``examples/local.yaml``.

* ``global_full_scale_*``: the main job as a user runs it, ``geoshard simulate
  examples/global.yaml --duration 30`` (scale 1, about 1 M requests per simulated
  second; 5 s with ``--quick``) in a subprocess: wall time, simulated seconds per wall
  second, requests, the verdict, and the peak RSS of the whole process tree (the CLI,
  Ray and its workers) sampled every 0.2 s.

Ratios: ``full_path_vs_bare_mm8`` (goal 1.0; the median over interleaved pairs of runs,
with the spread in ``pair_ratio_min`` / ``pair_ratio_max``), ``rss_budget_over_peak`` =
1 GiB / peak RSS (goal 1.0), ``global_full_scale_sim_s_per_wall_s`` over 30 s / 300 s
(goal 1.0: 30 simulated seconds in at most 5 minutes) and
``global_full_scale_rss_budget_over_peak`` = 8 GiB / peak tree RSS (goal 1.0).

Usage::

    python benchmarks/bench_sim.py [--json] [--quick] [--no-global]
"""

from __future__ import annotations

import contextlib
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import simpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report, log, median_seconds, parser

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "examples" / "local.yaml"


def bare_mm8(n: int) -> None:
    """Open M/M/8 with lambda 6.4, mu 1: one generator process per request."""
    env = simpy.Environment()
    res = simpy.Resource(env, capacity=8)
    rnd = random.Random(1)

    def customer() -> Generator[simpy.Event, Any, None]:
        with res.request() as req:
            yield req
            yield env.timeout(rnd.expovariate(1.0))

    def source() -> Generator[simpy.Event, Any, None]:
        for _ in range(n):
            yield env.timeout(rnd.expovariate(6.4))
            env.process(customer())

    env.process(source())
    env.run()


def bare_loop(n: int) -> None:
    """One process yielding ``n`` timeouts."""
    env = simpy.Environment()

    def p() -> Generator[simpy.Event, Any, None]:
        for _ in range(n):
            yield env.timeout(1)

    env.process(p())
    env.run()


def full_path(duration_s: float) -> tuple[int, float, float]:
    """Run the simulator on local.yaml: (simulated requests, run seconds, build seconds).

    The rate is taken over ``Simulation.run`` (the per-request work the bare models also
    do); loading the spec and building the model (rings, caches, pools) is a fixed cost,
    reported on its own.
    """
    from geoshard.sim.engine import Simulation
    from geoshard.spec import load_spec

    t0 = time.perf_counter()
    sim = Simulation(load_spec(LOCAL), seed=1, duration_s=duration_s, warmup_s=0.0)
    t1 = time.perf_counter()
    sim.run()
    return sim.arrived, time.perf_counter() - t1, t1 - t0


def _rss_child(requests: int) -> None:
    from geoshard.sim.engine import Simulation
    from geoshard.spec import load_spec

    spec = load_spec(LOCAL)
    qps = sum(spec.workload.peak_qps.values())
    sim = Simulation(spec, seed=1, duration_s=requests / qps, warmup_s=0.0)
    sim.run()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{sim.arrived} {peak_kib}")


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rss-child", type=int, default=0, help=argparse_hidden())
    p.add_argument(
        "--no-global",
        action="store_true",
        help="skip the full-scale run of examples/global.yaml (5+ minutes)",
    )
    args = p.parse_args()
    if args.rss_child:
        _rss_child(args.rss_child)
        return 0
    quick = args.quick
    rep = Report("sim")
    from geoshard import native

    # compiled with mypyc, or the sources (GEOSHARD_PURE=1 measures those; core/native.py)
    rep.metrics["engine"] = native.status()["reason"]
    n_mm8 = 50_000 if quick else 200_000
    n_loop = 200_000 if quick else 1_000_000
    dur = 30.0 if quick else 120.0
    reps = 3 if quick else 7
    log("bare SimPy timeout loop ...")
    t_loop = median_seconds(lambda: bare_loop(n_loop), repeat=reps)
    # The ratio is measured in pairs: each bare M/M/8 run is followed at once by a full
    # path run, so a burst of load on the (shared, noisy) cores hits both sides of a
    # pair; the reported ratio is the median of the pairs' ratios.
    log(f"bare SimPy M/M/8 and the full path (examples/local.yaml), {reps} interleaved pairs ...")
    bare_mm8(n_mm8)  # warm-up
    full_path(2.0)
    mm8_rates: list[float] = []
    full_rates: list[float] = []
    pair_ratios: list[float] = []
    builds: list[float] = []
    n_full = 0
    for _ in range(reps):
        t0 = time.perf_counter()
        bare_mm8(n_mm8)
        mm8_rate = n_mm8 / (time.perf_counter() - t0)
        n_full, t_run, t_build = full_path(dur)
        full_rate = n_full / t_run
        mm8_rates.append(mm8_rate)
        full_rates.append(full_rate)
        pair_ratios.append(full_rate / mm8_rate)
        builds.append(t_build)
    med = statistics.median
    rep.metrics["bare_mm8_req_per_s"] = round(med(mm8_rates))
    rep.metrics["bare_timeout_events_per_s"] = round(n_loop / t_loop)
    rep.metrics["full_path_req_per_s"] = round(med(full_rates))
    rep.metrics["full_path_requests"] = n_full
    rep.metrics["full_path_build_s"] = round(med(builds), 3)
    rep.metrics["full_path_incl_build_req_per_s"] = round(
        n_full / (n_full / med(full_rates) + med(builds))
    )
    rep.metrics["pair_ratio_min"] = round(min(pair_ratios), 4)
    rep.metrics["pair_ratio_max"] = round(max(pair_ratios), 4)
    rss_n = 1_000_000 if quick else 10_000_000
    log(f"peak RSS for {rss_n:,} simulated requests (subprocess) ...")
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(rss_n)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    arrived, peak_kib = int(out[0]), int(out[1])
    peak_mib = peak_kib / 1024
    rep.metrics["rss_requests"] = arrived
    rep.metrics["peak_rss_mib"] = round(peak_mib, 1)
    rep.ratio("full_path_vs_bare_mm8", med(pair_ratios), 1.0)
    rep.ratio("rss_budget_over_peak", 1024 / peak_mib, 1.0)
    if not args.no_global:
        g_dur = 5.0 if quick else 30.0
        log(f"geoshard simulate examples/global.yaml --duration {g_dur:g} (scale 1) ...")
        g = global_full_scale(g_dur)
        for k, v in g.items():
            rep.metrics[f"global_full_scale_{k}"] = v
        rep.ratio("global_full_scale_sim_s_per_wall_s", g["sim_s_per_wall_s"] / 0.1, 1.0)
        rep.ratio("global_full_scale_rss_budget_over_peak", 8.0 / g["peak_tree_rss_gib"], 1.0)
    return rep.emit(args.json)


def global_full_scale(duration_s: float) -> dict[str, float]:
    """Run the main job's command at scale 1; wall time and peak RSS of its process tree."""
    import json
    import os
    import tempfile

    import psutil

    exe = Path(sys.executable).with_name("geoshard")
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            str(exe),
            "simulate",
            str(REPO / "examples" / "global.yaml"),
            "--duration",
            f"{duration_s:g}",
            "--out",
            str(Path(out) / "run"),
            "--json",
        ]
        t0 = time.perf_counter()
        # stdout to a file: the result document is larger than a pipe's buffer, and a
        # child blocked on a full pipe would never exit while we poll it
        sink = Path(out) / "stdout.json"
        with sink.open("wb") as fh:
            proc = subprocess.Popen(
                cmd,
                stdout=fh,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "NO_COLOR": "1"},
            )
        root = psutil.Process(proc.pid)
        peak = 0
        cpu: dict[int, float] = {}  # CPU seconds per process of the tree (the last seen)
        deadline = t0 + 3600.0  # bounded: an hour at most
        while proc.poll() is None and time.perf_counter() < deadline:
            total = 0
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                tree = []
            for q in tree:
                with contextlib.suppress(psutil.Error), q.oneshot():
                    total += q.memory_info().rss
                    c = q.cpu_times()
                    cpu[q.pid] = c.user + c.system
            peak = max(peak, total)
            time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        wall = time.perf_counter() - t0
        stdout = sink.read_text()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"geoshard simulate exited {proc.returncode}")
    result = json.loads(stdout)
    return {
        "wall_s": round(wall, 1),
        "sim_s_per_wall_s": round(duration_s / wall, 4),
        "requests": result["metrics"]["arrivals"],
        "passed": result["verdict"]["passed"],
        "peak_tree_rss_gib": round(peak / 2**30, 2),
        # CPU seconds of the whole tree: on a shared machine, wall time / (cpu_s / cores)
        # says how much of the wall time was waiting for other work
        "cpu_s": round(sum(cpu.values()), 1),
        "executor": result["machine"]["executor"],
    }


def argparse_hidden() -> str:
    """Help text of the internal --rss-child flag."""
    return "internal: run the RSS child with this many requests"


if __name__ == "__main__":
    sys.exit(main())
