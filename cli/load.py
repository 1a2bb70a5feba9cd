"""``geoshard load``: Locust, headless in a subprocess, against the running deployment,
judged with the simulator's verdict rules.

Exit codes: 0 every SLO met; 1 an SLO breached (latency, attainment); 2 a bad flag or
a spec that is not the deployment's; 3 no deployment running in ``--dir``, or Locust
did not run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from geoshard.cli.deploy import DirOpt, JsonOpt, SpecArg, _existing_dir
from geoshard.cli.handling import StdoutConsole, emit_json, handles_errors

__all__ = ["load", "metrics_from_stats", "refusals_from_stats", "run_locust"]

#: The percentile columns of Locust's ``_stats.csv``, as fractions.
_PCTS = [
    ("50%", 0.5),
    ("66%", 0.66),
    ("75%", 0.75),
    ("80%", 0.8),
    ("90%", 0.9),
    ("95%", 0.95),
    ("98%", 0.98),
    ("99%", 0.99),
    ("99.9%", 0.999),
    ("99.99%", 0.9999),
    ("100%", 1.0),
]


def _num(x: str) -> float:
    try:
        return float(x)
    except ValueError:
        return float("nan")


#: The prefix of the rows of requests the API refused for load (429/503); the locustfile
#: names them so.
REFUSED_PREFIX = "refused:"


def _type_region(name: str) -> tuple[str, str] | None:
    if "/" not in name:
        return None
    t, region = name.removeprefix(REFUSED_PREFIX).split("/", 1)
    return t, region


def metrics_from_stats(rows: list[dict[str, str]], p99_targets: dict[str, float]) -> dict[str, Any]:
    """Per request type and region (``<type>/<region>`` rows of Locust's ``_stats.csv``):
    count, failed, P50, P99 and the attainment the verdict needs.

    Attainment (answered within the type's P99 target, failures as misses) is read from
    the percentile columns: the largest percentile at or under the target, so it errs
    low (never passes on interpolation). Requests the API refused for load
    (``refused:<type>/<region>`` rows) count as failed and as misses; P50 and P99 are
    those of the answered (admitted) requests.
    """
    refused: dict[tuple[str, str], int] = {}
    for row in rows:
        name = row.get("Name", "")
        tr = _type_region(name)
        if tr is not None and name.startswith(REFUSED_PREFIX) and row.get("Type") != "":
            refused[tr] = refused.get(tr, 0) + int(row["Request Count"])
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = row.get("Name", "")
        tr = _type_region(name)
        if tr is None or name.startswith(REFUSED_PREFIX) or row.get("Type") == "":
            continue
        t, region = tr
        row_failed = int(row["Failure Count"])
        ok = max(0, int(row["Request Count"]) - row_failed)
        failed = row_failed + refused.pop(tr, 0)
        n = ok + failed
        target = p99_targets.get(t)
        frac = 0.0
        if target is not None:
            for col, q in _PCTS:
                if _num(row.get(col, "nan")) <= target:
                    frac = q
        per = out.setdefault(t, {})
        per[region] = {
            "count": ok,
            "failed": failed,
            "p50_ms": _num(row["50%"]),
            "p99_ms": _num(row["99%"]),
            "slo_attainment": round(frac * ok / n, 4) if n else 1.0,
            "degraded": 0,
        }
    for (t, region), k in refused.items():  # every request of the row was refused
        out.setdefault(t, {})[region] = {
            "count": 0,
            "failed": k,
            "p50_ms": float("nan"),
            "p99_ms": float("nan"),
            "slo_attainment": 0.0,
            "degraded": 0,
        }
    return out


def refusals_from_stats(rows: list[dict[str, str]]) -> dict[str, Any]:
    """The requests the API refused for load: how many, and how fast the refusal came
    (P50, P99 and the slowest, over the ``refused:`` rows; Locust's percentiles)."""
    total = 0
    p50 = p99 = worst = 0.0
    by: dict[str, int] = {}
    for row in rows:
        name = row.get("Name", "")
        if not name.startswith(REFUSED_PREFIX) or row.get("Type") == "":
            continue
        n = int(row["Request Count"])
        total += n
        by[name.removeprefix(REFUSED_PREFIX)] = n
        # the worst row bounds the whole: a conservative merge of percentiles
        p50 = max(p50, _num(row["50%"]))
        p99 = max(p99, _num(row["99%"]))
        worst = max(worst, _num(row.get("100%", row.get("Max Response Time", "nan"))))
    return {
        "count": total,
        "p50_ms": p50 if total else None,
        "p99_ms": p99 if total else None,
        "max_ms": worst if total else None,
        "by_row": by,
    }


class MemorySampler:
    """The resident memory of every region's API process tree (uvicorn and its workers),
    sampled once a second in a thread while Locust runs: first sample and peak, MiB."""

    def __init__(self, pids: dict[str, int], period_s: float = 1.0) -> None:
        import threading

        self.pids = pids
        self.period_s = period_s
        self.first: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-rss", daemon=True)

    def sample(self) -> dict[str, float]:
        import psutil

        out: dict[str, float] = {}
        for region, pid in self.pids.items():
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
                rss = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        rss += p.memory_info().rss
            except psutil.Error:
                continue
            out[region] = round(rss / 2**20, 1)
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            for region, mib in self.sample().items():
                self.peak[region] = max(self.peak.get(region, 0.0), mib)

    def __enter__(self) -> MemorySampler:
        self.first = self.sample()
        self.peak = dict(self.first)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for region, mib in self.sample().items():
            self.peak[region] = max(self.peak.get(region, 0.0), mib)


def run_locust(
    cfg: dict[str, Any], run_dir: Path, *, users: int, duration: float, processes: int = 1
) -> list[dict[str, str]]:
    """Run the locustfile headless with configuration ``cfg`` (see its docstring) and
    return the rows of its ``_stats.csv``; its CSVs, HTML report and log go to
    ``run_dir``.

    Raises:
        BackendError: Locust failed or did not finish within ``duration + 120`` s.
    """
    from geoshard.errors import BackendError

    cfg_path = run_dir / "load-config.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    os.chmod(cfg_path, 0o600)  # it holds the token
    locustfile = Path(__file__).resolve().parents[1] / "cluster" / "loadtest" / "locustfile.py"
    if not locustfile.is_file():
        import geoshard.cluster.loadtest as lt

        locustfile = Path(lt.__file__).with_name("locustfile.py")
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{int(duration)}s",
        "--stop-timeout",
        "5",
        "--csv",
        str(run_dir / "locust"),
        "--html",
        str(run_dir / "report.html"),
        "--only-summary",
        "--exit-code-on-error",
        "0",
    ]
    if processes > 1:
        argv += ["--processes", str(processes)]
    env = dict(os.environ, GEOSHARD_LOAD_CONFIG=str(cfg_path))
    try:
        res = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=duration + 120, check=False
        )
    except subprocess.TimeoutExpired:
        raise BackendError(f"Locust did not finish within {duration + 120:.0f} s") from None
    (run_dir / "locust.log").write_text(res.stdout + res.stderr)
    stats = run_dir / "locust_stats.csv"
    if res.returncode != 0 or not stats.is_file():
        raise BackendError(
            f"Locust failed (exit {res.returncode}); see {run_dir / 'locust.log'}:\n"
            + res.stderr[-1500:]
        )
    with open(stats, newline="") as f:
        return list(csv.DictReader(f))


@handles_errors
def load(
    spec: SpecArg,
    dir: DirOpt = None,
    users: Annotated[
        int, typer.Option("--users", min=1, max=10_000, help="simulated users, 1..10000")
    ] = 20,
    rate: Annotated[
        float,
        typer.Option("--rate", min=0.1, max=100_000, help="target requests per second, all users"),
    ] = 50.0,
    duration: Annotated[
        float, typer.Option("--duration", min=5, max=86_400, help="seconds of load, 5..86400")
    ] = 30.0,
    processes: Annotated[
        int, typer.Option("--processes", min=1, max=64, help="Locust worker processes")
    ] = 1,
    population: Annotated[
        int,
        typer.Option(
            "--population", min=1, max=1_000_000, help="user ids drawn (Zipf) per jurisdiction"
        ),
    ] = 300,
    region: Annotated[
        str | None,
        typer.Option(
            "--region",
            help="send every request into this region's API (default: every region, "
            "weighted by workload.peak_qps)",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="run directory (default runs/load-<spec-name>)")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run Locust headless against the deployment and judge the spec's SLOs.

    Users draw ids from a Zipf law (workload.zipf.users), enter at home regions weighted
    by workload.peak_qps and send the spec's request mix. Writes Locust's CSVs, its HTML
    report and summary.json; exit 1 when an SLO is breached (the simulator's rules).

    Examples:
        geoshard load examples/local.yaml --dir /tmp/gs --users 20 --rate 50 --duration 30
    """
    from geoshard.cluster.state import StateDir
    from geoshard.errors import BackendError, ConfigError, did_you_mean
    from geoshard.sim.verdict import judge
    from geoshard.spec import load_spec

    given = load_spec(spec)
    if region is not None and region not in given.regions:
        raise ConfigError(
            f"--region {region!r} is not a region of '{given.name}'"
            f"{did_you_mean(region, given.regions)}; choose one of "
            f"{', '.join(sorted(given.regions))}"
        )
    sd = StateDir(_existing_dir(dir))
    if not sd.exists():
        raise BackendError(f"no deployment runs in {sd.root}; start one with geoshard up")
    state = sd.read_state()
    running = load_spec(sd.spec_file)
    if given.name != running.name:
        raise ConfigError(
            f"{spec} is the spec '{given.name}', but {sd.root} runs '{running.name}'; give "
            "the spec the deployment was started with"
        )
    w = running.workload
    run_dir = out or Path("runs") / f"load-{running.name}"
    run_dir.mkdir(parents=True, exist_ok=True)
    mix = {"feature_read": 0.0, "recommend": 0.0, "interaction_write": 0.0}
    for t, share in w.mix.items():
        if t in mix:
            mix[t] = float(share)
    cfg = {
        "token": sd.read_token(),
        "apis": {r: st.api.url for r, st in state.regions.items() if st.api is not None},
        "regions": {
            r: {"weight": float(w.peak_qps.get(r, 1.0)), "jurisdiction": reg.jurisdiction}
            for r, reg in running.regions.items()
            if region is None or r == region
        },
        "mix": mix,
        "population": population,
        "zipf_users": float(w.zipf.users),
        "items": int(w.items),
        "k": int(w.items_per_recommend),
        "rate_per_user": rate / users,
        "seed": 0,
    }
    print(f"load: {users} users, {rate:g} req/s for {duration:g} s -> {run_dir}", file=sys.stderr)
    api_pids = {
        r: st.api.process.pid
        for r, st in state.regions.items()
        if st.api is not None and st.api.process is not None
    }
    with MemorySampler(api_pids) as memory:
        rows = run_locust(cfg, run_dir, users=users, duration=duration, processes=processes)
    targets = {t: lat.p99_ms for t, lat in running.slo.latency.items()}
    requests = metrics_from_stats(rows, targets)
    total = next((r for r in rows if r.get("Name") == "Aggregated"), {})
    metrics = {
        "requests": requests,
        "nodes": {},
        "residency": {"violations": 0, "examples": []},
        "throughput_per_s": _num(total.get("Requests/s", "nan")),
        "total_requests": int(total.get("Request Count", 0) or 0),
        "total_failures": int(total.get("Failure Count", 0) or 0),
    }
    refusals = refusals_from_stats(rows)
    overload = {
        "refused": refusals,
        "refused_share": (
            round(refusals["count"] / metrics["total_requests"], 4)
            if metrics["total_requests"]
            else 0.0
        ),
        "api_rss_mib": {"first": memory.first, "peak": memory.peak},
        "max_inflight_per_process": running.deploy.admission.max_inflight,
        "sustained_inflight_per_process": running.deploy.admission.sustained_inflight,
    }
    verdict = judge(running, metrics)
    summary = {
        "kind": "load",
        "spec": running.name,
        "options": {
            "users": users,
            "rate": rate,
            "duration_s": duration,
            "processes": processes,
            "population": population,
            "region": region,
        },
        "metrics": metrics,
        "overload": overload,
        "verdict": verdict,
        "run_dir": str(run_dir),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if json_out:
        emit_json(summary)
    else:
        con = StdoutConsole(highlight=False, width=None if sys.stdout.isatty() else 160)
        tbl = Table("request", "region", "count", "failed", "P50 ms", "P99 ms", "within P99")
        for typ, per in sorted(requests.items()):
            for region, v in sorted(per.items()):
                tbl.add_row(
                    typ,
                    region,
                    str(v["count"]),
                    str(v["failed"]),
                    f"{v['p50_ms']:g}",
                    f"{v['p99_ms']:g}",
                    f"{v['slo_attainment']:.2%}",
                )
        con.print(tbl)
        if refusals["count"]:
            con.print(
                f"refused for load (429/503): {refusals['count']:,} "
                f"({overload['refused_share']:.1%}), answered in P50 {refusals['p50_ms']:g} ms, "
                f"P99 {refusals['p99_ms']:g} ms, max {refusals['max_ms']:g} ms"
            )
        rss = ", ".join(
            f"{r} {memory.first.get(r, 0):.0f} -> peak {memory.peak.get(r, 0):.0f}"
            for r in sorted(memory.peak)
        )
        if rss:
            con.print(f"API memory (MiB, process tree): {rss}")
        con.print(
            f"{metrics['total_requests']} requests, {metrics['throughput_per_s']:.1f}/s: "
            + ("[green]SLOs met[/]" if verdict["passed"] else "[red]SLO breached[/]")
        )
        for fl in verdict["failures"]:
            con.print(f"[red]failed:[/] {fl['message']}")
        con.print(f"run directory: {run_dir}")
    if not verdict["passed"]:
        raise typer.Exit(code=1)
