"""``geoshard simulate``: run the discrete-event simulator on a spec and judge it.

Registered on the main app by ``geoshard.cli.app``. Writes a run directory with
``result.json``, ``timeseries.csv``, CSV tables, plots and ``report.html``, prints the
verdict first, then the summary (or the result with ``--json``), and sets the exit code
from the verdict: 0 passed; 1 failed (an SLO row, a pool over its load ceiling, or the
residency audit); 2 bad spec, flag or output path, or a run too large for the bounds of
:mod:`geoshard.cli.preflight`, all checked before the simulation starts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from geoshard.cli.handling import handles_errors, print_result
from geoshard.cli.preflight import (
    DEFAULT_MAX_REQUESTS,
    MAX_DURATION_S,
    check_output_dir,
    check_simulate_flags,
    check_simulation_size,
)

__all__ = ["simulate"]


@handles_errors
def simulate(
    spec: Annotated[Path, typer.Argument(help="topology spec (YAML), e.g. examples/global.yaml")],
    duration: Annotated[
        float, typer.Option("--duration", help=f"simulated seconds, in (0, {MAX_DURATION_S:g}]")
    ] = 60.0,
    seed: Annotated[
        int, typer.Option("--seed", help="seed of every random stream, in [0, 2**63-1]")
    ] = 1,
    scale: Annotated[
        float,
        typer.Option(
            "--scale",
            help="the faithful slice to simulate, in (0, 1]: every node with this "
            "share of its requests and service times stretched to keep per-node load "
            "(1 = the whole topology)",
        ),
    ] = 1.0,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="run directory (default runs/<spec-name>-<seed>); created with its "
            "parents if missing, reused if it exists",
        ),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option("--json", help='print the result as JSON (on an error: {"error": {...}})'),
    ] = False,
    warmup: Annotated[
        float | None,
        typer.Option(
            "--warmup",
            help="seconds before measurements start (default 0 with the warm start, "
            "10 % of --duration with --cold)",
        ),
    ] = None,
    cold: Annotated[
        bool, typer.Option("--cold", help="start with empty caches instead of their steady state")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=0,
            max=256,
            help="independent parts of the topology simulated at "
            "once: 0 chooses (Ray for large runs), 1 runs them one after another",
        ),
    ] = 0,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="run the parts on an existing Ray cluster")
    ] = None,
    max_requests: Annotated[
        int,
        typer.Option(
            "--max-requests",
            envvar="GEOSHARD_MAX_REQUESTS",
            help="refuse a run expected to simulate more requests than this",
        ),
    ] = DEFAULT_MAX_REQUESTS,
) -> None:
    """Simulate the topology and judge it: latency per type and region, load, residency, cost.

    The verdict is printed first: every request type must meet its latency and attainment
    targets in every client region (degraded answers count as misses unless the SLO
    accepts them), no pool may exceed slo.load_ceiling in any phase of the run, and the
    residency audit must find nothing.

    Exit codes: 0 verdict passed; 1 verdict failed; 2 bad spec, flag or output path, or a
    run beyond the bounds (checked before it starts); 130 interrupted. A closed stdout
    keeps the verdict.

    Examples:
        geoshard simulate examples/local.yaml --duration 60 --seed 1
        geoshard simulate examples/global.yaml --scale 0.01 --duration 60 --json
    """
    check_simulate_flags(duration, seed, scale, warmup, max_requests)
    if out is not None:
        check_output_dir(out)
    code = _simulate(
        spec, duration, seed, scale, out, json_out, warmup, max_requests, cold, workers, ray_address
    )
    if code:
        raise typer.Exit(code=code)


def _simulate(
    spec_path: Path,
    duration: float,
    seed: int,
    scale: float,
    out: Path | None,
    json_out: bool,
    warmup: float | None,
    max_requests: int,
    cold: bool,
    workers: int,
    ray_address: str | None,
) -> int:

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from geoshard.errors import ConfigError
    from geoshard.sim.engine import EngineOptions
    from geoshard.sim.run import simulate_spec, write_run
    from geoshard.spec import load_spec

    spec = load_spec(spec_path)
    run_dir = out if out is not None else Path("runs") / f"{spec.name}-{seed}"
    check_output_dir(run_dir)
    check_simulation_size(spec, duration, scale, max_requests)
    err = Console(stderr=True, highlight=False)
    progress = Progress(
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f} %"),
        TimeElapsedColumn(),
        console=err,
        disable=not sys.stderr.isatty(),
        transient=True,
    )
    with progress:
        task = progress.add_task("sim", total=1.0)
        result, ts = simulate_spec(
            spec,
            seed=seed,
            duration_s=duration,
            scale=scale,
            warmup_s=warmup,
            options=EngineOptions(warm_start=not cold),
            workers=workers,
            ray_address=ray_address,
            on_progress=lambda f: progress.update(task, completed=f),
        )
    try:
        write_run(run_dir, result, ts)
    except OSError as exc:
        raise ConfigError(
            f"--out '{run_dir}': cannot write the run directory "
            f"({exc.strerror or exc}); free space or choose another --out"
        ) from None
    code = 0 if result["verdict"]["passed"] else 1
    # the verdict stands whether or not anyone reads the rest of stdout
    print_result(result, lambda: _render(result, run_dir), json_out)
    return code


def _render(result: dict[str, Any], run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    m = result["metrics"]
    v = result["verdict"]
    if v["passed"]:
        con.print(
            "[bold green]VERDICT: PASSED[/] every request type met its targets in every "
            "region, no pool above its load ceiling, 0 residency violations"
        )
    else:
        con.print(
            f"[bold red]VERDICT: FAILED[/] ({len(v['failures'])} failure"
            f"{'s' if len(v['failures']) != 1 else ''})"
        )
        for f in v["failures"][:20]:
            con.print(f"  [red]x[/] {f['message']}")
        if len(v["failures"]) > 20:
            con.print(f"  ... {len(v['failures']) - 20} more in result.json (verdict)")
    machine = result["machine"]
    con.print(
        f"[bold]{result['spec_name']}[/] seed {result['seed']}, scale {result['scale']:g}, "
        f"{result['duration_s']:g} s simulated ({m['arrivals']:,} requests in full) in "
        f"{machine['wall_s']} s wall ({machine['executor']['executor']}, "
        f"{len(machine['executor']['parts'])} independent part(s); "
        f"engine {machine['engine']['reason']})"
    )
    con.print("assumptions:")
    for a in result["assumptions"]:
        con.print(f"  - {a}")
    targets = result["spec"]["slo"]["latency"]
    failing = {f["name"] for f in v["failures"]}
    t = Table(
        "type",
        "region",
        "answered",
        "failed",
        "degraded",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p99.9 ms",
        "in SLO",
        "target p50/p99",
    )
    for typ, per in m["requests"].items():
        tgt = targets.get(typ)
        for reg, row in per.items():
            bad = f"{typ}/{reg}" in failing
            mark = "[red]" if bad else ""
            end = "[/]" if bad else ""
            t.add_row(
                typ,
                reg,
                f"{row['count']:,}",
                f"{row['failed']:,}",
                f"{row.get('degraded', 0):,}",
                f"{mark}{row['p50_ms']:.2f}{end}",
                f"{row['p95_ms']:.2f}",
                f"{mark}{row['p99_ms']:.2f}{end}",
                f"{row['p999_ms']:.2f}",
                f"{mark}{row['slo_attainment']:.2%}{end}",
                f"{tgt['p50_ms']:g}/{tgt['p99_ms']:g}" if tgt else "-",
            )
    con.print(t)
    c = Table("cache", "hits", "misses", "hit ratio")
    for lvl, row in m["caches"].items():
        c.add_row(lvl, f"{row['hits']:,}", f"{row['misses']:,}", f"{row['hit_ratio']:.2%}")
    con.print(c)
    ceiling = result["spec"]["slo"]["load_ceiling"]
    busiest = sorted(m["nodes"].items(), key=lambda kv: (-kv[1]["peak_offered_load"], kv[0]))[:8]
    n = Table(
        "busiest pool",
        "peak offered load",
        "in phase",
        "utilisation",
        "max queue",
        "mean wait ms",
        "p99 wait ms",
    )
    for name, row in busiest:
        over = row["peak_offered_load"] > ceiling
        load = f"{row['peak_offered_load']:.1%}"
        n.add_row(
            name,
            f"[red]{load}[/]" if over else load,
            row["peak_phase"],
            f"{row['utilisation']:.1%}",
            str(row["max_queue"]),
            f"{row['wait_ms']:.3f}",
            f"{row['wait_p99_ms']:.3f}",
        )
    con.print(n)
    con.print(
        f"load ceiling {ceiling:.0%} (slo.load_ceiling): offered load = service demand / "
        "capacity in the busiest phase between changes of rate or health",
        style="dim",
    )
    con.print(
        "counts: "
        + ", ".join(f"{k} {val:,}" for k, val in m["counts"].items() if not isinstance(val, dict))
    )
    r = m["residency"]
    con.print(f"residency audit: {r['checks']:,} checks, {r['violations']} violation(s)")
    cost = m["cost_per_hour_usd"]
    con.print(
        f"cost per hour of the topology: ${cost['total']:,.2f} (API ${cost['api']:,.2f}, "
        f"hot ${cost['hot']:,.2f}, warm ${cost['warm']:,.2f})"
    )
    for f in result["faults"]:
        con.print(
            f"fault: {f['kind']} {f['target']} at {f['at_s']:g} s for {f['duration_s']:g} s "
            f"(router sees it at {f['router_sees_at_s']})"
        )
    con.print(f"run directory: {run_dir}")
