"""``geoshard chaos``: a fault injected into a running deployment under load, and the
invariants checked afterwards.

Registered on the main app by ``geoshard.cli.app``; errors go through
:func:`geoshard.cli.handling.handles_errors`. Exit codes: 0 every invariant held; 1 an
invariant failed (an acknowledged write lost, a value never written found, a residency
violation, an audit that could not finish); 2 a bad spec, flag or scenario; 3 the
deployment is not running or not healthy.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from geoshard.cli.deploy import DirOpt, JsonOpt, SpecArg, _existing_dir
from geoshard.cli.handling import StdoutConsole, emit_json, handles_errors

__all__ = ["chaos"]

MAX_SEED = 2**63 - 1


@handles_errors
def chaos(
    spec: SpecArg,
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            help="kill-primary, minority-partition, region-outage, api-crash, region-partition, "
            "latency-spike, surge, drain-crash",
        ),
    ],
    dir: DirOpt = None,
    seed: Annotated[
        int, typer.Option("--seed", min=0, max=MAX_SEED, help="seeds the fault time and target")
    ] = 0,
    duration: Annotated[
        float,
        typer.Option("--duration", help="seconds of load, 8..3600; the fault is inside it"),
    ] = 30.0,
    region: Annotated[
        str | None,
        typer.Option("--region", help="the region to hit (default: a seeded choice)"),
    ] = None,
    rate: Annotated[
        float, typer.Option("--rate", min=1, max=5000, help="operations per second")
    ] = 60.0,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="run directory (default runs/chaos-<scenario>-<seed>)"),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Inject a fault into the running deployment under load and check the invariants.

    Load with unique keys and an acknowledged-write ledger; the fault at a seeded time;
    heal; settle; then durability (every acknowledged write read back), the residency
    audit of every hot node, cache, stream, Milvus collection and Parquet file,
    availability and P99 before/during/after, failover time. Writes result.json,
    timeline.csv, ledger.csv, timeline.png and report.html. Exit 1 when an invariant
    failed, 3 when the deployment is not running.

    Examples:
        geoshard chaos examples/local.yaml --dir /tmp/gs --scenario kill-primary --seed 1
    """
    from geoshard.cluster.chaos.runner import ChaosOptions, run_chaos

    opts = ChaosOptions(scenario=scenario, seed=seed, duration_s=duration, region=region)
    opts.rate_per_s = rate
    result = run_chaos(
        _existing_dir(dir),
        spec,
        opts,
        out=out,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    if json_out:
        emit_json(result["metrics"] | _head(result))
    else:
        _print(result)
    if not result["verdict"]["passed"]:
        raise typer.Exit(code=1)


def _head(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "scenario": result["scenario"],
        "seed": result["seed"],
        "region": result["region"],
        "fault": result["fault"],
        "passed": result["verdict"]["passed"],
        "failures": result["verdict"]["failures"],
        "run_dir": result["run_dir"],
    }


def _print(result: dict[str, Any]) -> None:
    out = StdoutConsole(highlight=False, width=None if sys.stdout.isatty() else 160)
    m = result["metrics"]
    v = result["verdict"]
    out.print(
        f"chaos [bold]{result['scenario']}[/] on {result['region']} (seed {result['seed']}): "
        + ("[green]passed[/]" if v["passed"] else "[red]FAILED[/]")
    )
    t = Table("metric", "value")
    for k in (
        "acknowledged_writes_lost",
        "residency_violations",
        "failover_s",
        "availability_during_fault",
        "p99_ms_before",
        "p99_ms_during",
        "p99_ms_after",
        "writes_acknowledged",
        "writes_indeterminate",
        "unexpected_values",
    ):
        t.add_row(k, str(m[k]))
    out.print(t)
    for f in v["failures"]:
        out.print(f"[red]failed:[/] {f}")
    out.print(f"run directory: {result['run_dir']}")
