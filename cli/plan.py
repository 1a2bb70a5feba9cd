"""``geoshard plan``: the cheapest topology that meets every SLO in every scenario.

Registered on the main app by ``geoshard.cli.app``. Screens the search space with the
analytic model, confirms the best candidates with the simulator and tightens the answer
with it (:mod:`geoshard.sim.planner`), and writes a plan directory (``plan.json``, the planned spec and its diff, ``candidates.csv``,
``pools.csv``, ``pareto.png``, ``report.html``). Prints the answer per region and pool
(or the plan with ``--json``). Exit codes: 0 a plan; 1 nothing in the space meets the
SLOs (the binding constraints are named); 2 a bad search expression, flag, spec or
output path, checked before any work.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from geoshard.cli.handling import handles_errors, print_result
from geoshard.cli.preflight import check_output_dir
from geoshard.cli.progress import phase_bars

__all__ = ["plan"]

_MAX_CONFIRM = 20
_MAX_REPLICATIONS = 10


@handles_errors
def plan(
    spec: Annotated[Path, typer.Argument(help="topology spec (YAML), e.g. examples/global.yaml")],
    search: Annotated[
        str | None,
        typer.Option(
            "--search",
            help="the search space: NAME=LO..HI[:STEP|:xFACTOR] or NAME=V1|V2|..., "
            "comma-separated; pool dimensions (api.servers, api.workers, warm.nodes, "
            "warm.workers, hot.nodes, hot.workers) take their own value in every region, "
            "cache dimensions (l1/l2/regional.capacity_items or _bytes) one for the spec. "
            "Default: API servers, warm and hot nodes from 0.5x to 1.5x the spec's, and the L2 "
            "cache from 0.1x to 10x",
        ),
    ] = None,
    regions: Annotated[
        str | None,
        typer.Option(
            "--regions",
            help="comma-separated regions whose pools the plan sizes (default: all); "
            "the others keep the spec's sizes but must still meet their SLOs",
        ),
    ] = None,
    objective: Annotated[
        str,
        typer.Option(
            "--objective",
            help="cost (the cheapest plan) or latency (the lowest worst P99 / "
            "target, then the cheapest)",
        ),
    ] = "cost",
    scenarios: Annotated[
        str,
        typer.Option(
            "--scenarios",
            help="comma-separated: normal, region-loss (each region lost, "
            "residency-constrained failover), n-1 (one node fewer in every pool), campaign (the "
            "spec's campaigns)",
        ),
    ] = "normal,region-loss,n-1,campaign",
    confirm: Annotated[
        int,
        typer.Option(
            "--confirm",
            help=f"candidates simulated in every scenario, best first, until one passes, "
            f"0-{_MAX_CONFIRM} (0: the model's answer, unconfirmed and not tightened)",
        ),
    ] = 2,
    replications: Annotated[
        int,
        typer.Option(
            "--replications",
            help=f"simulator runs per candidate and scenario (seeds seed, "
            f"seed+1, ...), 1-{_MAX_REPLICATIONS}; their spread gives the 95 % CI",
        ),
    ] = 2,
    scale: Annotated[
        float | None,
        typer.Option(
            "--scale",
            help="the confirmation runs' faithful slice, in (0, 1] (default: about "
            "300,000 simulated requests per run)",
        ),
    ] = None,
    duration: Annotated[
        float,
        typer.Option("--duration", help="simulated seconds per confirmation run, in [5, 3600]"),
    ] = 30.0,
    seed: Annotated[int, typer.Option("--seed", help="the first seed, in [0, 2**32)")] = 1,
    beta: Annotated[
        float | None,
        typer.Option(
            "--beta",
            help="also require square-root staffing: every pool at least a + beta "
            "sqrt(a) servers for its offered load a (Netflix's tiers: 2.375, 1.761, 1.16, "
            "1.0)",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=0,
            max=256,
            help="1 runs every evaluation in this process; 0 (all "
            "CPUs) or N run them on a local Ray (serially when Ray is not installed)",
        ),
    ] = 0,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="run the evaluations on an existing Ray cluster"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="plan directory (default runs/plan-<spec-name>); created if missing, "
            "reused if it exists",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help='print the plan as JSON (on an error: {"error": {...}})')
    ] = False,
) -> None:
    """Find the cheapest topology that meets every SLO in every scenario, and write it.

    Screens the whole search space with the analytic model (queueing, caches, the real
    ring and router), confirms the best candidates with the simulator in every scenario
    (replicated, with confidence intervals), takes off every API and warm node the
    simulator shows is not needed, and writes the chosen spec beside a diff against the
    input, the specs and commands that reproduce each run, the Pareto front of cost
    against P99, and report.html (docs/planning.md).

    Exit codes: 0 a plan; 1 nothing in the space meets the SLOs (the binding constraints
    are named); 2 bad search expression, flag, spec or output path; 130 interrupted.

    Examples:
        geoshard plan examples/global.yaml
        geoshard plan examples/local.yaml --search "api.servers=1..4,warm.nodes=1..4" --confirm 1
    """
    code = _plan(
        spec,
        search,
        regions,
        objective,
        scenarios,
        confirm,
        replications,
        scale,
        duration,
        seed,
        beta,
        workers,
        ray_address,
        out,
        json_out,
    )
    if code:
        raise typer.Exit(code=code)


def _check_flags(
    objective: str,
    kinds: list[str],
    confirm: int,
    replications: int,
    scale: float | None,
    duration: float,
    seed: int,
    beta: float | None,
) -> None:
    from geoshard.errors import ConfigError, did_you_mean
    from geoshard.sim.scenarios import SCENARIO_KINDS

    if objective not in ("cost", "latency"):
        raise ConfigError(
            f"--objective '{objective}' is unknown; use cost or latency"
            f"{did_you_mean(objective, ['cost', 'latency'])}"
        )
    if not kinds:
        raise ConfigError("--scenarios is empty; give one or more of " + ", ".join(SCENARIO_KINDS))
    for k in kinds:
        if k not in SCENARIO_KINDS:
            raise ConfigError(
                f"--scenarios: '{k}' is not a scenario{did_you_mean(k, SCENARIO_KINDS)}"
                f" (known: {', '.join(SCENARIO_KINDS)})"
            )
    if not 0 <= confirm <= _MAX_CONFIRM:
        raise ConfigError(
            f"--confirm(={confirm}) must be in [0, {_MAX_CONFIRM}]; each "
            "candidate costs a simulation per scenario and replication"
        )
    if not 1 <= replications <= _MAX_REPLICATIONS:
        raise ConfigError(f"--replications(={replications}) must be in [1, {_MAX_REPLICATIONS}]")
    if scale is not None and not (math.isfinite(scale) and 0 < scale <= 1):
        raise ConfigError(f"--scale(={scale:g}) must be in (0, 1]; e.g. 0.01")
    if not (math.isfinite(duration) and 5 <= duration <= 3600):
        raise ConfigError(
            f"--duration(={duration:g}) must be in [5, 3600] simulated seconds; e.g. 30"
        )
    if not 0 <= seed < 2**32:
        raise ConfigError(
            f"--seed(={seed}) must be in [0, 2**32); replications use seed, seed+1, ..."
        )
    if beta is not None and not (math.isfinite(beta) and 0 <= beta <= 10):
        raise ConfigError(
            f"--beta(={beta:g}) must be in [0, 10]; Netflix's tiers use 2.375, 1.761, 1.16 and 1.0"
        )


def _plan(
    spec_path: Path,
    search: str | None,
    regions: str | None,
    objective: str,
    scenarios: str,
    confirm: int,
    replications: int,
    scale: float | None,
    duration: float,
    seed: int,
    beta: float | None,
    workers: int,
    ray_address: str | None,
    out: Path | None,
    json_out: bool,
) -> int:
    from geoshard.errors import ConfigError, did_you_mean
    from geoshard.sim.plan_report import write_plan
    from geoshard.sim.planner import PlanSettings, auto_scale, family_z
    from geoshard.sim.planner import plan as run_plan
    from geoshard.sim.search import default_search, parse_search
    from geoshard.spec import load_spec

    kinds = [k.strip() for k in scenarios.split(",") if k.strip()]
    _check_flags(objective, kinds, confirm, replications, scale, duration, seed, beta)
    if out is not None:
        check_output_dir(out)
    s = load_spec(spec_path)
    regs = None
    if regions is not None:
        regs = [r.strip() for r in regions.split(",") if r.strip()]
        if not regs:
            raise ConfigError(
                f"--regions is empty; give region names of the spec, e.g. {next(iter(s.regions))}"
            )
        for r in regs:
            if r not in s.regions:
                raise ConfigError(
                    f"--regions: '{r}' is not a region of the spec"
                    f"{did_you_mean(r, list(s.regions))} (known: "
                    f"{', '.join(s.regions)})"
                )
    space = parse_search(search if search is not None else default_search(s), s, regs)
    run_dir = out if out is not None else Path("runs") / f"plan-{s.name}"
    check_output_dir(run_dir)
    pools = sum(2 + r.hot.nodes for r in s.regions.values())
    settings = PlanSettings(
        scenarios=tuple(dict.fromkeys(kinds)),
        objective=objective,
        margin_z=family_z(pools),
        confirm=confirm,
        replications=replications,
        scale=scale if scale is not None else auto_scale(s, duration),
        duration_s=duration,
        seed=seed,
        beta=beta,
    )
    with phase_bars() as on_progress:
        result = run_plan(
            s, space, settings, workers=workers, ray_address=ray_address, on_progress=on_progress
        )
    text = spec_path.read_text(encoding="utf-8-sig")
    try:
        paths = write_plan(run_dir, result, s, spec_path, text)
    except OSError as exc:
        raise ConfigError(
            f"--out '{run_dir}': cannot write the plan directory "
            f"({exc.strerror or exc}); free space or choose another --out"
        ) from None
    code = 0 if result["chosen"] else 1
    print_result(_finite(result), lambda: _render(result, run_dir, paths), json_out)
    return code


def _finite(x: Any) -> Any:
    """JSON has no inf or nan: they become strings."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _render(result: dict[str, Any], run_dir: Path, paths: dict[str, Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    ch = result["chosen"]
    con.print(
        f"[bold]{result['spec_name']}[/]: search {result['search']} over "
        f"{len(result['regions'])} region(s), {result['space_size']:.3g} candidates; "
        f"{len(result['candidates'])} screened, scenarios: "
        f"{', '.join(result['scenarios'])}"
    )
    for n in result["scenario_notes"]:
        con.print(f"  note: {n}", style="dim")
    if not ch:
        con.print(
            "[bold red]NO PLAN[/]: nothing in the search space meets every constraint; binding:"
        )
        for r in result["no_plan_reasons"]:
            con.print(f"  [red]x[/] {r}")
        con.print(f"plan directory: {run_dir}")
        return
    cost = ch["cost"]
    how = "confirmed by the simulator" if ch["confirmed"] else "from the model only (--confirm 0)"
    con.print(
        f"[bold green]PLAN[/] {how}: ${cost['total']:,.2f}/hour (API "
        f"${cost['api']:,.2f}, hot ${cost['hot']:,.2f}, warm ${cost['warm']:,.2f}, "
        f"caches ${cost['caches']:,.2f})"
        + (
            f"; caches {', '.join(f'{k} {v:,.0f}' for k, v in ch['caches'].items())}"
            if ch["caches"]
            else ""
        )
    )
    t = Table(
        "region", "pool", "nodes", "workers", "peak load", "in scenario", "P99 wait ms", "$/hour"
    )
    for p in ch["pools"]:
        nodes = (
            f"{p['input_nodes']} -> {p['nodes']}"
            if p["nodes"] != p["input_nodes"]
            else str(p["nodes"])
        )
        t.add_row(
            p["region"],
            p["pool"],
            nodes,
            str(p["workers"]),
            f"{p['peak_load']:.1%}",
            p["peak_scenario"],
            f"{p['wait_p99_ms']:.3f}",
            f"{p['cost_per_hour']:,.2f}",
        )
    con.print(t)
    lat = Table("type", "client", "entry", "worst scenario", "P50 ms", "P99 ms", "target P99")
    for r in ch["latency"]:
        lat.add_row(
            r["type"],
            r["client"],
            str(r["entry"]),
            r["scenario"],
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['target_p99_ms']:g}",
        )
    con.print(lat)
    for cf in result["confirmation"]:
        mark = "[green]confirmed[/]" if cf["confirmed"] else "[red]failed[/]"
        con.print(f"candidate {cf['index']} (${cf['cost']['total']:,.2f}/h): {mark}")
        for sc, s in cf["summary"].items():
            con.print(
                f"  {sc}: {s['passed']}/{s['runs']} runs passed; worst P99/target "
                f"{s['worst_p99_ratio']:.3f} ± {s['worst_p99_ratio_ci95']:.3f} "
                f"({s['worst_row']}); peak load {s['peak_load']:.1%} ± "
                f"{s['peak_load_ci95']:.1%} ({s['peak_pool']})"
                + (f"; {s['failures'][0]}" if s["failures"] else "")
            )
    tight = result["tightened"]
    if tight is not None:
        con.print(
            "tightened: "
            + (
                "confirmed in every scenario"
                if tight["confirmed"]
                else "failed a confirmation run; the confirmed counts stand"
            )
            + f" (${tight['cost']['total']:,.2f}/h)"
        )
    for b in result["one_below"]:
        if b["failed"]:
            con.print(
                f"one fewer: {b['pool']} at {b['one_below']} in {b['scenario']} fails: "
                f"{b['failure']}"
            )
        else:
            con.print(f"one fewer: {b['pool']}: {b['failure']}")
    con.print(f"binding: {'; '.join(ch['binding'])}", style="dim")
    timing = result["timing"]
    con.print(
        f"wall {timing['total_s']:.1f} s (screen {timing['screen_s']:.1f} s, confirm "
        f"{timing['confirm_s']:.1f} s, one fewer {timing.get('tighten_s', 0.0):.1f} s) on "
        f"{result['executor']['executor']}"
    )
    con.print(
        f"planned spec: {paths.get('spec')} (diff: {paths.get('diff')}); report: {paths['report']}"
    )
    if result.get("commands"):
        con.print("reproduce:")
        for c in result["commands"]:
            con.print(f"  {c}", style="dim")
