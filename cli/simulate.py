"""``geoshard simulate``: run the discrete-event simulator on a spec.

Registered on the main app by ``geoshard.cli.app``. Writes a run directory with
``result.json`` and ``timeseries.csv`` (plus the report when :mod:`geoshard.sim.report`
exists), prints a summary (or the result with ``--json``) and sets the exit code:
0 every SLO and the residency audit passed; 1 one of them failed; 2 bad spec, flag or
output path, or a run too large for the bounds of :mod:`geoshard.cli.preflight`, all
checked before the simulation starts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from geoshard.cli.handling import handles_errors, silence_stdout
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
    duration: Annotated[float, typer.Option(
        "--duration", help=f"simulated seconds, in (0, {MAX_DURATION_S:g}]")] = 60.0,
    seed: Annotated[int, typer.Option(
        "--seed", help="seed of every random stream, in [0, 2**63-1]")] = 1,
    scale: Annotated[float, typer.Option(
        "--scale", help="fraction of shards, traffic and keys to simulate, in (0, 1]")] = 1.0,
    out: Annotated[Path | None, typer.Option(
        "--out", help="run directory (default runs/<spec-name>-<seed>); created with its "
        "parents if missing, reused if it exists")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="print the result as JSON (on an error: {\"error\": {...}})")] = False,
    warmup: Annotated[float | None, typer.Option(
        "--warmup", help="seconds before measurements start (default 10 % of --duration)")] = None,
    max_requests: Annotated[int, typer.Option(
        "--max-requests", envvar="GEOSHARD_MAX_REQUESTS",
        help="refuse a run expected to simulate more requests than this (about 100k per "
        "second of wall time)")] = DEFAULT_MAX_REQUESTS,
) -> None:
    """Simulate the topology: latency percentiles, hit ratios, load, failover, residency, cost.

    Exit codes: 0 ok; 1 an SLO or the residency audit failed; 2 bad spec, flag or output
    path, or a run beyond the bounds (checked before it starts); 130 interrupted. A closed
    stdout keeps the verdict.

    Examples:
        geoshard simulate examples/local.yaml --duration 60 --seed 1
        geoshard simulate examples/global.yaml --scale 0.001 --duration 60 --json
    """
    check_simulate_flags(duration, seed, scale, warmup, max_requests)
    if out is not None:
        check_output_dir(out)
    code = _simulate(spec, duration, seed, scale, out, json_out, warmup, max_requests)
    if code:
        raise typer.Exit(code=code)


def _simulate(spec_path: Path, duration: float, seed: int, scale: float, out: Path | None,
              json_out: bool, warmup: float | None, max_requests: int) -> int:
    import json

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from geoshard.errors import ConfigError
    from geoshard.sim.run import simulate_spec, write_run
    from geoshard.spec import load_spec

    spec = load_spec(spec_path)
    run_dir = out if out is not None else Path("runs") / f"{spec.name}-{seed}"
    check_output_dir(run_dir)
    check_simulation_size(spec, duration, scale, max_requests)
    err = Console(stderr=True, highlight=False)
    progress = Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.completed:.0f}/"
                        "{task.total:.0f} s"), TimeElapsedColumn(), console=err,
                        disable=not sys.stderr.isatty(), transient=True)
    with progress:
        task = progress.add_task("sim", total=duration)
        result, ts = simulate_spec(spec, seed=seed, duration_s=duration, scale=scale,
                                   warmup_s=warmup,
                                   on_second=lambda s: progress.update(task, completed=s))
    try:
        write_run(run_dir, result, ts)
    except OSError as exc:
        raise ConfigError(f"--out '{run_dir}': cannot write the run directory "
                          f"({exc.strerror or exc}); free space or choose another --out") from None
    m = result["metrics"]
    code = 0 if m["slo"]["passed"] and m["residency"]["violations"] == 0 else 1
    # the verdict stands whether or not anyone reads the rest of stdout
    try:
        if json_out:
            sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
        else:
            _render(result, ts, run_dir)
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
    except SystemExit as exc:  # rich's Console answers a closed stdout with SystemExit(1)
        if not isinstance(exc.__context__, BrokenPipeError):
            raise
        silence_stdout()
    return code


def _render(result: dict[str, Any], ts: list[dict[str, Any]], run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    m = result["metrics"]
    con.print(f"[bold]{result['spec_name']}[/] seed {result['seed']}, scale {result['scale']:g}, "
              f"{result['duration_s']:g} s simulated ({m['arrivals']:,} requests) in "
              f"{result['machine']['wall_s']} s wall")
    for a in result["assumptions"]:
        con.print(f"  - {a}")
    t = Table("type", "region", "count", "failed", "p50 ms", "p95 ms", "p99 ms", "p99.9 ms",
              "in SLO")
    for typ, per in m["requests"].items():
        for reg, v in per.items():
            t.add_row(typ, reg, f"{v['count']:,}", f"{v['failed']:,}", f"{v['p50_ms']:.2f}",
                      f"{v['p95_ms']:.2f}", f"{v['p99_ms']:.2f}", f"{v['p999_ms']:.2f}",
                      f"{v['slo_attainment']:.2%}")
    con.print(t)
    c = Table("cache", "hits", "misses", "hit ratio")
    for lvl, v in m["caches"].items():
        c.add_row(lvl, f"{v['hits']:,}", f"{v['misses']:,}", f"{v['hit_ratio']:.2%}")
    con.print(c)
    scaled = result["scale"] < 1
    busiest = sorted(m["nodes"].items(),
                     key=lambda kv: (-kv[1]["full_scale_offered_load"], kv[0]))[:8]
    cols = ["busiest node", "utilisation", "offered load"]
    if scaled:
        cols.append("full-scale load (est.)")
    n = Table(*cols, "max queue", "mean wait ms")
    for name, v in busiest:
        cells = [name, f"{v['utilisation']:.1%}", f"{v['offered_load']:.1%}"]
        if scaled:
            cells.append(f"{v['full_scale_offered_load']:.1%}")
        n.add_row(*cells, str(v["max_queue"]), f"{v['wait_ms']:.3f}")
    con.print(n)
    if scaled:
        con.print("full-scale load (est.): the scaled node's offered load x k / (n x F), its "
                  "rounding factor (n nodes at full scale, k simulated)", style="dim")
    con.print("counts: " + ", ".join(f"{k} {v}" for k, v in m["counts"].items()
                                     if not isinstance(v, dict)))
    r = m["residency"]
    con.print(f"residency audit: {r['checks']:,} checks, {r['violations']} violation(s)")
    cost = m["cost_per_hour_usd"]
    con.print(f"cost per hour: scaled model ${cost['scaled_model']['total']:,.2f}, full scale "
              f"${cost['full_scale']['total']:,.2f}")
    for f in result["faults"]:
        con.print(f"fault: {f['kind']} {f['target']} at {f['at_s']:g} s for {f['duration_s']:g} s "
                  f"(router sees it at {f['router_sees_at_s']})")
    if m["slo"]["passed"]:
        con.print("[green]SLO passed[/]")
    else:
        con.print("[red]SLO failed:[/] " + "; ".join(m["slo"]["failures"]))
    con.print(f"run directory: {run_dir}")
