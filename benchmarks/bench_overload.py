"""Benchmark: one region's API at 3x its measured capacity (admission control).

Measured in one run against one region's API (``--region``, default ``eu-west``), with
the spec's request mix and Zipf users, all requests entering that region:

1. **capacity**: ``geoshard load``'s Locust, closed loop and saturating (``--users``
   users, no pacing to speak of): the admitted (answered, not refused) requests per
   second;
2. **overload**: open loop at 3x that capacity. Admitted requests must keep each type's
   P99 within the spec's SLO, the excess must be refused (429/503) fast, and the API's
   resident memory must stay bounded (first sample vs peak, process tree);
3. **reference**: a bare FastAPI endpoint under uvicorn that answers 503 at once, loaded
   by the same Locust at the same offered rate on the same cores: how fast a refusal
   can come back through this client on this machine.

On a machine with two or more CPUs the region's API process tree is pinned to CPU 0 and
everything else (the other processes of the deployment, Locust, this script) to the
other CPUs, so that the API's capacity is one core and the client is not starved by the
server it measures (``--no-pin`` keeps the scheduler's placement). Affinities are
restored at the end.

Ratios: ``admitted_p99_slo_<type>`` = SLO P99 / admitted P99 (goal 1.0);
``goodput_vs_capacity`` = admitted per second under overload / capacity (goal 0.9: the
refusals must not starve the admitted work);
``refusal_p99_10ms`` = 10 ms / refusal P99 (goal 1.0: the issue's target);
``refusal_p99_vs_bare_fastapi_503`` = reference refusal P99 / ours (goal 0.5: within 2x of
what a bare endpoint gets through the same client); ``api_memory_bounded`` = first RSS
/ peak RSS (goal 0.8).

Without ``--dir`` it starts, seeds and stops its own deployment of
``examples/local.yaml`` (one API worker per region).

Usage::

    python benchmarks/bench_overload.py --json [--dir DIR] [--region R] [--duration S]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Report, log, own_deployment, parser

REPO = Path(__file__).resolve().parents[1]

REFUSING_APP = textwrap.dedent('''
    """The reference: a bare FastAPI app that refuses every request at once."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT"])
    async def refuse(path: str, request: Request) -> JSONResponse:
        return JSONResponse(
            {"error": "overloaded", "code": "overloaded", "field": None},
            503,
            headers={"Retry-After": "1"},
        )
''')


@contextlib.contextmanager
def pinned(api_pid: int, other_pids: list[int], enabled: bool) -> Iterator[bool]:
    """The API's process tree on CPU 0, the rest (and this process) on the other CPUs."""
    import psutil

    cpus = sorted(psutil.Process().cpu_affinity() or [])
    if not enabled or len(cpus) < 2:
        yield False
        return
    saved: dict[int, list[int]] = {}

    def tree(pid: int) -> list[psutil.Process]:
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    api = tree(api_pid)
    api_pids = {p.pid for p in api}
    rest = [p for pid in [*other_pids, psutil.Process().pid] for p in tree(pid)]
    plan = [(p, cpus[:1]) for p in api] + [(p, cpus[1:]) for p in rest if p.pid not in api_pids]
    try:
        for proc, aff in plan:
            with contextlib.suppress(psutil.Error):
                saved[proc.pid] = proc.cpu_affinity()
                proc.cpu_affinity(aff)
        yield True
    finally:
        for pid, aff in saved.items():
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).cpu_affinity(aff)


def _load(args: argparse.Namespace, root: Path, users: int, rate: float, out: Path) -> Any:
    """``geoshard load --json`` into ``out``; its summary (exit 1, an SLO breach, is
    expected when requests are refused)."""
    import json

    argv = [
        str(Path(sys.executable).with_name("geoshard")),
        "load",
        str(args.spec),
        "--dir",
        str(root),
        "--region",
        args.region,
        "--users",
        str(users),
        "--rate",
        f"{rate:.1f}",
        "--duration",
        str(args.duration),
        "--out",
        str(out),
        "--json",
    ]
    res = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    if res.returncode not in (0, 1):
        raise SystemExit(f"geoshard load failed (exit {res.returncode}):\n{res.stderr[-2000:]}")
    return json.loads(res.stdout)


def _admitted(summary: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """Answered requests and the worst admitted P99 per type."""
    n = 0
    p99: dict[str, float] = {}
    for t, per in summary["metrics"]["requests"].items():
        for v in per.values():
            n += int(v["count"])
            if v["count"]:
                p99[t] = max(p99.get(t, 0.0), float(v["p99_ms"]))
    return n, p99


def _reference(args: argparse.Namespace, rate: float, users: int, tmp: Path) -> dict[str, Any]:
    """The same Locust, at ``rate``, against a bare FastAPI app that refuses everything."""
    from bench_serve import start_app

    from geoshard.cli.load import refusals_from_stats, run_locust

    proc, port = start_app(REFUSING_APP, "bench_overload_ref", 1, tmp, "/healthz")
    try:
        with pinned(proc.pid, [], not args.no_pin):
            cfg = {
                "token": "reference",
                "apis": {args.region: f"http://127.0.0.1:{port}"},
                "regions": {args.region: {"weight": 1.0, "jurisdiction": "eu"}},
                "mix": {"feature_read": 0.5, "recommend": 0.3, "interaction_write": 0.2},
                "population": 300,
                "zipf_users": 0.8,
                "items": 1000,
                "k": 20,
                "rate_per_user": rate / users,
                "seed": 0,
            }
            run_dir = tmp / "reference"
            run_dir.mkdir()
            rows = run_locust(cfg, run_dir, users=users, duration=args.duration)
        return refusals_from_stats(rows)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(report: Report, args: argparse.Namespace, root: Path) -> None:
    from geoshard.cluster.state import StateDir
    from geoshard.spec import load_spec

    sd = StateDir(root)
    state = sd.read_state()
    spec = load_spec(sd.spec_file)
    api = state.regions[args.region].api
    assert api is not None and api.process is not None
    others = [p.pid for p in state.processes() if p.pid != api.process.pid]
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    conn.request("GET", "/healthz")
    if conn.getresponse().status != 200:
        raise SystemExit(f"{args.region}'s API is not healthy; check geoshard status")
    conn.close()
    report.metrics.update(
        {
            "region": args.region,
            "api_workers": api.workers,
            "max_inflight_per_process": spec.deploy.admission.max_inflight,
            "sustained_inflight_per_process": spec.deploy.admission.sustained_inflight,
            "max_loop_lag_ms": spec.deploy.admission.max_loop_lag_ms,
            "duration_s": args.duration,
        }
    )
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp_s:
        tmp = Path(tmp_s)
        with pinned(api.process.pid, others, not args.no_pin) as is_pinned:
            report.metrics["pinned"] = is_pinned
            log(f"capacity: closed loop, {args.users} users")
            cap = _load(args, root, args.users, 100_000.0, tmp / "capacity")
            answered, _ = _admitted(cap)
            capacity = answered / args.duration
            report.metrics["capacity_per_s"] = round(capacity, 1)
            rate = 3.0 * capacity
            log(
                f"overload: {rate:.0f}/s offered (3x {capacity:.0f}/s), {args.overload_users} users"
            )
            over = _load(args, root, args.overload_users, rate, tmp / "overload")
        n_ok, p99 = _admitted(over)
        ref = _reference(args, rate, args.overload_users, tmp)
    o = over["overload"]
    refused = o["refused"]
    offered = over["metrics"]["total_requests"]
    first = sum(o["api_rss_mib"]["first"].get(r, 0.0) for r in [args.region])
    peak = sum(o["api_rss_mib"]["peak"].get(r, 0.0) for r in [args.region])
    report.metrics.update(
        {
            "offered_per_s": round(offered / args.duration, 1),
            "admitted_per_s": round(n_ok / args.duration, 1),
            "refused_share": o["refused_share"],
            "admitted_p99_ms": p99,
            "refusal_p50_ms": refused["p50_ms"],
            "refusal_p99_ms": refused["p99_ms"],
            "refusal_max_ms": refused["max_ms"],
            "reference_refusal_p50_ms": ref["p50_ms"],
            "reference_refusal_p99_ms": ref["p99_ms"],
            "reference_refused": ref["count"],
            "api_rss_first_mib": first,
            "api_rss_peak_mib": peak,
        }
    )
    for t, v in sorted(p99.items()):
        target = spec.slo.latency[t].p99_ms
        report.ratio(f"admitted_p99_slo_{t}", target / max(v, 1e-9), 1.0)
    # goodput: an admission rule that refuses too eagerly serves less under overload
    # than at capacity (seen with a 1 ms loop-lag bound: a quarter of capacity)
    report.ratio("goodput_vs_capacity", n_ok / args.duration / max(capacity, 1e-9), 0.9)
    ours = float(refused["p99_ms"] or 0.0)
    report.ratio("refusal_p99_10ms", 10.0 / max(ours, 1e-9), 1.0)
    report.ratio(
        "refusal_p99_vs_bare_fastapi_503", float(ref["p99_ms"] or 0.0) / max(ours, 1e-9), 0.5
    )
    report.ratio("api_memory_bounded", first / max(peak, 1e-9), 0.8)


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, help="a running, seeded deployment (else one is started)")
    p.add_argument("--spec", type=Path, default=REPO / "examples" / "local.yaml")
    p.add_argument("--region", default="eu-west", help="the API put under overload")
    p.add_argument("--duration", type=int, default=15, help="seconds of each load phase")
    p.add_argument("--users", type=int, default=24, help="closed-loop users (capacity)")
    p.add_argument("--overload-users", type=int, default=60, help="open-loop users (3x)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    args = p.parse_args()
    if args.quick:
        args.duration = 8
    report = Report("overload")
    if args.dir is not None:
        run(report, args, args.dir)
        return report.emit(args.json)
    with own_deployment(report, args.spec, api_workers=1, users=300, items=1000) as root:
        run(report, args, root)
    return report.emit(args.json)


if __name__ == "__main__":
    raise SystemExit(main())
