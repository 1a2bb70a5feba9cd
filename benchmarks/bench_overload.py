"""Benchmark: one region's API at 3x its measured capacity (admission control).

Measured in one run against one region's API (``--region``, default ``eu-west``), with
the spec's request mix and Zipf users, all requests entering that region. The load is
``wrk`` (``--generator wrk``, the default; Debian package ``wrk``) replaying a file of
requests with ``wrk_mix.lua``, or ``geoshard load``'s Locust (``--generator locust``):

1. **capacity**: closed loop (wrk: ``--users`` connections, default the spec's
   ``admission.sustained_inflight`` per API process, the concurrency it admits without
   refusing; Locust: ``--users`` 24): the admitted (answered, not refused) requests per
   second;
2. **overload**: 3x that capacity (wrk: ``--connections`` paced connections, each
   waiting an exponential time after each answer so that together they offer the rate;
   Locust: ``--overload-users`` open-loop users). Admitted requests must keep each
   type's P99 within the spec's SLO, the excess must be refused (429/503) fast, and the
   API's resident memory must stay bounded (first sample vs peak, process tree);
3. **reference**: a bare FastAPI endpoint under uvicorn that answers 503 at once, loaded
   the same way at the same rate on the same cores: how fast a refusal can come back on
   this machine.

A light **probe** (``latency_probe.py``: one request at a time from the same mix,
``--probe-rate`` per second, ``nice -5`` where allowed) times the server's answers
during the load (with wrk in every phase, its answers counted in capacity and goodput
and wrk offering the rest of 3x; with Locust in phases 2 and 3). Locust at
~1,300-1,900 requests/s saturates its own core, so its latencies include its own
queueing (the bare reference's refusal P99 was 7-19 ms through it, 2-6 ms through the
probe); the probe's do not. The latency targets (admitted P99 per type, refusal P99)
are judged on the probe's figures; with Locust, its own are reported beside them with
the same goals (``locust_*``).

On a machine with two or more CPUs every thread of the region's API process tree is
pinned to CPU 0, alone, and everything else (the other processes of the deployment,
the load generator, this script) to the other CPUs, so that the API's capacity is one
core and nothing else delays its event loop; the probe runs on the API's core
(``--probe-cpu server``: on the client's, its own scheduling and packet work queue
behind the load and the backends; ``client`` puts it there). ``--no-pin`` keeps the
scheduler's placement. Affinities are restored at the end.

Ratios: ``admitted_p99_slo_<type>`` = SLO P99 / the probe's admitted P99 (goal 1.0);
``goodput_vs_capacity`` = admitted per second under overload / capacity (goal 0.9: the
refusals must not starve the admitted work); ``offered_vs_3x_capacity`` = offered per
second / 3x capacity (goal 0.9: did the client reach the overload asked for);
``refusal_p99_10ms`` = 10 ms / the probe's refusal P99 (goal 1.0: the issue's target);
``refusal_p99_vs_bare_fastapi_503`` = the probe's reference refusal P99 / ours (goal 0.5:
within 2x of a bare endpoint's); with Locust, ``locust_admitted_p99_slo_<type>`` and
``locust_refusal_p99_vs_bare_fastapi_503``, the same through Locust;
``api_memory_bounded`` = first RSS / peak RSS (goal 0.8). ``api_cpu_busy_share`` is the
API's CPU use over the overload phase (1.0 = its whole core).

Without ``--dir`` it starts, seeds and stops its own deployment of
``examples/local.yaml`` (one API worker per region).

Usage::

    python benchmarks/bench_overload.py --json [--dir DIR] [--region R] [--duration S]
                                        [--generator wrk|locust] [--connections N]
                                        [--probe-rate R] [--probe-cpu server|client]
                                        [--users-seeded N] [--items-seeded N]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
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
def pinned(api_pid: int, other_pids: list[int], enabled: bool) -> Iterator[list[int] | None]:
    """The API's process tree on CPU 0, alone; the deployment's other processes and this
    one (and so the load generator it starts) on the other CPUs. Yields the API's CPUs
    (``None`` when not pinned)."""
    import psutil

    cpus = sorted(psutil.Process().cpu_affinity() or [])
    if not enabled or len(cpus) < 2:
        yield None
        return
    saved: dict[int, list[int]] = {}  # affinity per thread id

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
            # every thread: an affinity set on a pid binds only that thread, and the
            # threads a process already runs (uvicorn's pool, Milvus's, Redis's) would
            # stay on every CPU (the API's core was not its own before this)
            with contextlib.suppress(psutil.Error):
                for th in proc.threads():
                    with contextlib.suppress(OSError):
                        saved[th.id] = sorted(os.sched_getaffinity(th.id))
                        os.sched_setaffinity(th.id, aff)
        yield cpus[:1]
    finally:
        for tid, aff in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, aff)


@contextlib.contextmanager
def probing(
    args: argparse.Namespace,
    port: int,
    token: str | None,
    server_cpus: list[int] | None,
    workload: list[str],
) -> Iterator[dict[str, Any]]:
    """``latency_probe.py`` against ``port`` during the load phase run inside the block
    (from 2 s after its start to 2 s before its end), on ``server_cpus`` when given and
    ``--probe-cpu server``; its result lands in the dict yielded once the block is over.
    ``workload``: the probe's ``--mix``, ``--jurisdiction``, ``--users``... flags."""
    import json

    seconds = max(1, args.duration - 4)
    argv = [
        sys.executable,
        str(Path(__file__).with_name("latency_probe.py")),
        str(port),
        "--delay",
        "2",
        "--duration",
        str(seconds),
        "--rate",
        str(args.probe_rate),
        *workload,
    ]
    if token:
        argv += ["--token", token]
    on_server = server_cpus is not None and args.probe_cpu == "server"
    out: dict[str, Any] = {}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        if on_server:
            # on the server's core, beside the server alone, not on the client's with
            # Locust and the rest of the deployment, where its own scheduling and packet
            # work queue behind them (README); --probe-cpu client keeps it there
            import psutil

            psutil.Process(proc.pid).cpu_affinity(server_cpus)
        yield out
        stdout, _ = proc.communicate(timeout=args.duration + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"the latency probe failed (exit {proc.returncode})")
    out.update(json.loads(stdout))
    out["cpu"] = "server" if on_server else "client"
    out["seconds"] = seconds


def _probe_workload(spec: Any, region: str, users: int, items: int) -> list[str]:
    """The probe's flags for the spec's mix and ``region``'s users."""
    mix = ",".join(f"{t}={share}" for t, share in spec.workload.mix.items() if share > 0)
    j = spec.regions[region].jurisdiction
    return ["--mix", mix, "--jurisdiction", j, "--users", str(users), "--items", str(items)]


def _raise_priority() -> None:
    """In a child before exec: ``nice -5`` where allowed (the load generator shares its
    CPU with the deployment's other processes and must still reach 3x)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -5)


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its children."""
    import psutil

    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
    return total


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
    res = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        preexec_fn=_raise_priority,
    )
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


#: wrk's script: replays a request file, counts answers by status (bench_overload's wrk).
WRK_SCRIPT = Path(__file__).with_name("wrk_mix.lua")
#: What one answer is assumed to take when the pacing of wrk's connections is set.
_ANSWER_MS = 2.0


def write_requests(path: Path, spec: Any, region: str, users: int, items: int, n: int) -> None:
    """``n`` requests of the spec's mix into ``region``, for users of its jurisdiction
    drawn from the spec's Zipf law over ``users`` ids (as ``geoshard load``'s Locust
    draws them), one per line: ``METHOD<TAB>PATH<TAB>BODY``, for ``wrk_mix.lua``."""
    import bisect
    import itertools
    import random

    from latency_probe import Workload

    mix = {t: float(share) for t, share in spec.workload.mix.items() if share > 0}
    work = Workload(mix, jurisdiction=spec.regions[region].jurisdiction, users=users, items=items)
    s = float(spec.workload.zipf.users)
    cum = list(itertools.accumulate(1.0 / rank**s for rank in range(1, users + 1)))
    rng = random.Random(0)
    lines = []
    for _ in range(n):
        user = bisect.bisect_left(cum, rng.random() * cum[-1])
        _, method, url_path, body = work.request(rng, user)
        lines.append(f"{method}\t{url_path}\t{(body or b'').decode()}")
    path.write_text("\n".join(lines) + "\n")


def run_wrk(
    args: argparse.Namespace,
    port: int,
    token: str,
    requests: Path,
    connections: int,
    rate: float | None,
) -> dict[str, Any]:
    """wrk for ``args.duration`` s on ``connections`` kept-alive connections, replaying
    ``requests``: closed loop (``rate`` None: the next request as soon as an answer came)
    or paced, each connection waiting an exponential time after each answer so that
    ``connections`` together offer about ``rate`` per second; wrk's counts (the script's
    JSON line)."""
    import json

    delay_ms = 0.0 if rate is None else max(0.0, 1e3 * connections / rate - _ANSWER_MS)
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{args.duration}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        f"http://127.0.0.1:{port}",
        "--",
        str(requests),
        token,
        f"{delay_ms:.3f}",
    ]
    res = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=args.duration + 60,
    )
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed (exit {res.returncode}):\n{res.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    out["connections"] = connections
    out["mean_delay_ms"] = round(delay_ms, 3)
    return out


def _probe_answered(probe_out: dict[str, Any]) -> float:
    """The probe's admitted answers per second."""
    n = sum(int(v["count"]) for v in probe_out["admitted"].values())
    return n / probe_out["seconds"]


def _answered(counts: dict[str, Any]) -> int:
    """wrk's admitted answers: 2xx and 4xx other than 429 (a 404 is an answer)."""
    return int(counts["ok"]) + int(counts["r4xx"])


@contextlib.contextmanager
def reference_app(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[int, list[int] | None]]:
    """The bare FastAPI app that refuses everything, pinned like the API: yields its port
    and its CPUs (``None`` when not pinned); stopped at the end of the block."""
    from bench_serve import start_app

    proc, port = start_app(REFUSING_APP, "bench_overload_ref", 1, tmp, "/healthz")
    try:
        with pinned(proc.pid, [], not args.no_pin) as server_cpus:
            yield port, server_cpus
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _reference(
    args: argparse.Namespace, rate: float, users: int, tmp: Path, workload: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same Locust, at ``rate``, against a bare FastAPI app that refuses everything."""
    from geoshard.cli.load import refusals_from_stats, run_locust

    with reference_app(args, tmp) as (port, server_cpus):
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
        with probing(args, port, None, server_cpus, workload) as probe_out:
            rows = run_locust(cfg, run_dir, users=users, duration=args.duration)
    return refusals_from_stats(rows), probe_out


def run_wrk_phases(
    report: Report,
    args: argparse.Namespace,
    spec: Any,
    port: int,
    api_pid: int,
    api_workers: int,
    others: list[int],
    token: str,
) -> None:
    """The three phases with wrk as the load (``--generator wrk``), and their ratios."""
    from geoshard.cli.load import MemorySampler

    workload = _probe_workload(spec, args.region, args.users_seeded, args.items_seeded)
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp_s:
        tmp = Path(tmp_s)
        requests = tmp / "requests.tsv"
        write_requests(requests, spec, args.region, args.users_seeded, args.items_seeded, 50_000)
        with pinned(api_pid, others, not args.no_pin) as server_cpus:
            report.metrics["pinned"] = server_cpus is not None
            # closed loop at the concurrency the API admits without refusing: its capacity
            # is what it serves, not what it serves while also refusing
            conns = args.users or spec.deploy.admission.sustained_inflight * api_workers
            log(f"capacity: wrk, closed loop, {conns} connections")
            # the probe runs in this phase too: its CPU on the API's core is then taken
            # from both phases alike, and it times the answers at capacity
            with probing(args, port, token, server_cpus, workload) as cap_probe_out:
                cap = run_wrk(args, port, token, requests, conns, None)
            # the probe's answers count: it is part of the load in every phase
            capacity = _answered(cap) / cap["seconds"] + _probe_answered(cap_probe_out)
            rate = 3.0 * capacity
            wrk_rate = max(rate - args.probe_rate, 0.1 * rate)  # the probe sends the rest
            log(
                f"overload: {rate:.0f}/s offered (3x {capacity:.0f}/s), "
                f"{args.connections} connections"
            )
            cpu0, t0 = _tree_cpu_s(api_pid), time.monotonic()
            with (
                MemorySampler({args.region: api_pid}) as memory,
                probing(args, port, token, server_cpus, workload) as probe_out,
            ):
                over = run_wrk(args, port, token, requests, args.connections, wrk_rate)
            report.metrics["api_cpu_busy_share"] = round(
                (_tree_cpu_s(api_pid) - cpu0) / (time.monotonic() - t0), 3
            )
        log(f"reference: a bare FastAPI 503 endpoint at {rate:.0f}/s")
        with (
            reference_app(args, tmp) as (ref_port, ref_cpus),
            probing(args, ref_port, None, ref_cpus, workload) as ref_probe_out,
        ):
            ref = run_wrk(args, ref_port, "reference", requests, args.connections, wrk_rate)
    offered = over["requests"] / over["seconds"] + args.probe_rate
    admitted = _answered(over) / over["seconds"] + _probe_answered(probe_out)
    report.metrics.update(
        {
            "capacity_per_s": round(capacity, 1),
            "capacity_wrk": cap,
            "capacity_probe_admitted_p99_ms": {
                t: float(v["p99_ms"]) for t, v in cap_probe_out["admitted"].items()
            },
            "capacity_probe_refused": (cap_probe_out["refused"] or {"count": 0})["count"],
            "overload_wrk": over,
            "reference_wrk": ref,
            "offered_per_s": round(offered, 1),
            "admitted_per_s": round(admitted, 1),
            "refused_share": round((over["r429"] + over["r503"]) / max(over["requests"], 1), 4),
            "errors_5xx_not_refusals": over["r5xx"],
        }
    )
    report.ratio("offered_vs_3x_capacity", offered / max(rate, 1e-9), 0.9)
    report.ratio("goodput_vs_capacity", admitted / max(capacity, 1e-9), 0.9)
    _probe_verdict(
        report,
        spec,
        probe_out,
        ref_probe_out,
        memory.first.get(args.region, 0.0),
        memory.peak.get(args.region, 0.0),
    )


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
    report.metrics["generator"] = args.generator
    if args.generator == "wrk":
        run_wrk_phases(
            report, args, spec, api.port, api.process.pid, api.workers, others, sd.read_token()
        )
        return
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp_s:
        tmp = Path(tmp_s)
        with pinned(api.process.pid, others, not args.no_pin) as server_cpus:
            report.metrics["pinned"] = server_cpus is not None
            users = args.users or 24
            log(f"capacity: closed loop, {users} users")
            cap = _load(args, root, users, 100_000.0, tmp / "capacity")
            answered, _ = _admitted(cap)
            capacity = answered / args.duration
            report.metrics["capacity_per_s"] = round(capacity, 1)
            rate = 3.0 * capacity
            log(
                f"overload: {rate:.0f}/s offered (3x {capacity:.0f}/s), {args.overload_users} users"
            )
            cpu0, t0 = _tree_cpu_s(api.process.pid), time.monotonic()
            workload = _probe_workload(spec, args.region, args.users_seeded, args.items_seeded)
            with probing(args, api.port, sd.read_token(), server_cpus, workload) as probe_out:
                over = _load(args, root, args.overload_users, rate, tmp / "overload")
            # the API's CPU over the phase (Locust's start and stop included)
            report.metrics["api_cpu_busy_share"] = round(
                (_tree_cpu_s(api.process.pid) - cpu0) / (time.monotonic() - t0), 3
            )
        n_ok, p99 = _admitted(over)
        ref, ref_probe_out = _reference(args, rate, args.overload_users, tmp, workload)
    o = over["overload"]
    refused = o["refused"]
    offered = over["metrics"]["total_requests"]
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
        }
    )
    # Locust's admitted P99s include its own queueing: reported beside the probe's
    for t, v in sorted(p99.items()):
        target = spec.slo.latency[t].p99_ms
        report.ratio(f"locust_admitted_p99_slo_{t}", target / max(v, 1e-9), 1.0)
    # did the client offer the 3x it was asked to?
    report.ratio("offered_vs_3x_capacity", offered / args.duration / max(rate, 1e-9), 0.9)
    report.ratio("goodput_vs_capacity", n_ok / args.duration / max(capacity, 1e-9), 0.9)
    locust = float(refused["p99_ms"] or 0.0)
    report.ratio(
        "locust_refusal_p99_vs_bare_fastapi_503",
        float(ref["p99_ms"] or 0.0) / max(locust, 1e-9),
        0.5,
    )
    _probe_verdict(
        report,
        spec,
        probe_out,
        ref_probe_out,
        o["api_rss_mib"]["first"].get(args.region, 0.0),
        o["api_rss_mib"]["peak"].get(args.region, 0.0),
    )


def _probe_verdict(
    report: Report,
    spec: Any,
    probe_out: dict[str, Any],
    ref_probe_out: dict[str, Any],
    rss_first: float,
    rss_peak: float,
) -> None:
    """The probe's figures and the ratios judged on them (whatever the load was), and
    the memory ratio."""
    no_refusal = {"count": 0, "p50_ms": None, "p99_ms": None}
    probe = probe_out["refused"] or no_refusal
    ref_probe = ref_probe_out["refused"] or no_refusal
    probe_p99 = {t: float(v["p99_ms"]) for t, v in probe_out["admitted"].items()}
    report.metrics.update(
        {
            "probe_nice": probe_out["nice"],
            "probe_cpu": probe_out["cpu"],
            "probe_refused": probe["count"],
            "probe_refusal_p50_ms": probe["p50_ms"],
            "probe_refusal_p99_ms": probe["p99_ms"],
            "probe_admitted": sum(int(v["count"]) for v in probe_out["admitted"].values()),
            "probe_admitted_p99_ms": probe_p99,
            "reference_probe_refused": ref_probe["count"],
            "reference_probe_refusal_p50_ms": ref_probe["p50_ms"],
            "reference_probe_refusal_p99_ms": ref_probe["p99_ms"],
            "api_rss_first_mib": rss_first,
            "api_rss_peak_mib": rss_peak,
        }
    )
    # the admitted P99s and the refusals are judged on the probe's timings: it does not
    # queue behind its own CPU as a saturated load generator does
    for t, v in sorted(probe_p99.items()):
        report.ratio(f"admitted_p99_slo_{t}", spec.slo.latency[t].p99_ms / max(v, 1e-9), 1.0)
    ours = float(probe["p99_ms"] or 0.0)
    report.ratio("refusal_p99_10ms", 10.0 / max(ours, 1e-9), 1.0)
    report.ratio(
        "refusal_p99_vs_bare_fastapi_503",
        float(ref_probe["p99_ms"] or 0.0) / max(ours, 1e-9),
        0.5,
    )
    report.ratio("api_memory_bounded", rss_first / max(rss_peak, 1e-9), 0.8)


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, help="a running, seeded deployment (else one is started)")
    p.add_argument(
        "--spec",
        type=Path,
        default=REPO / "examples" / "local.yaml",
        help="the spec of the deployment started (without --dir)",
    )
    p.add_argument("--region", default="eu-west", help="the API put under overload")
    p.add_argument("--duration", type=int, default=15, help="seconds of each load phase")
    p.add_argument(
        "--users",
        type=int,
        help="closed-loop users or connections of the capacity phase (default: Locust 24; "
        "wrk the spec's admission.sustained_inflight per API process, so that nothing is "
        "refused)",
    )
    p.add_argument("--overload-users", type=int, default=60, help="Locust's open-loop users (3x)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument(
        "--probe-rate", type=float, default=150.0, help="requests/s of the refusal probe"
    )
    p.add_argument(
        "--users-seeded", type=int, default=300, help="users seeded (the probe draws from them)"
    )
    p.add_argument("--items-seeded", type=int, default=1000, help="items seeded")
    p.add_argument(
        "--generator",
        choices=("wrk", "locust"),
        default="wrk",
        help="the load: wrk (C, Debian package wrk) or geoshard load's Locust",
    )
    p.add_argument(
        "--connections",
        type=int,
        default=400,
        help="wrk's connections under overload (paced: each waits connections/rate s)",
    )
    p.add_argument(
        "--probe-cpu",
        choices=("server", "client"),
        default="server",
        help="run the probe on the server's CPU (default) or with Locust on the others",
    )
    args = p.parse_args()
    if args.quick:
        args.duration = 8
    # checked before anything starts: each is a usage error (exit 2), not a failed run
    if args.duration < 5:
        p.error(f"--duration {args.duration}: each phase needs at least 5 s; use --duration 15")
    for flag, value in (
        ("--users", 1 if args.users is None else args.users),
        ("--overload-users", args.overload_users),
        ("--users-seeded", args.users_seeded),
        ("--items-seeded", args.items_seeded),
        ("--connections", args.connections),
    ):
        if value < 1:
            p.error(f"{flag} {value}: must be at least 1")
    if not 0 < args.probe_rate <= 1000:
        p.error(f"--probe-rate {args.probe_rate:g}: use a rate in (0, 1000] requests/s")
    if args.generator == "wrk" and shutil.which("wrk") is None:
        p.error(
            "--generator wrk: wrk is not installed; apt-get install -y wrk, or --generator locust"
        )
    if args.dir is None and not args.spec.is_file():
        p.error(f"--spec {args.spec}: no such file; use a spec such as examples/local.yaml")
    if args.dir is not None and not args.dir.is_dir():
        p.error(f"--dir {args.dir}: no such directory; start one with geoshard up, or omit --dir")
    if args.dir is None:
        from geoshard.errors import GeoshardError
        from geoshard.spec import load_spec

        try:
            regions = list(load_spec(args.spec).regions)
        except GeoshardError as exc:
            p.error(f"--spec {args.spec}: {exc}")
        if args.region not in regions:
            p.error(f"--region {args.region}: not in {args.spec.name}; use one of {regions}")
    report = Report("overload")
    if args.dir is not None:
        run(report, args, args.dir)
        return report.emit(args.json)
    with own_deployment(
        report, args.spec, api_workers=1, users=args.users_seeded, items=args.items_seeded
    ) as root:
        run(report, args, root)
    return report.emit(args.json)


if __name__ == "__main__":
    raise SystemExit(main())
