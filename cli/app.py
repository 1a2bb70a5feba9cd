"""The ``geoshard`` command line.

Data goes to stdout (a table for people, ``--json`` for machines); progress, logs and
warnings go to stderr.

Exit codes:
    0  success (also when the reader closes stdout early, as ``| head`` does)
    1  ran, but a gate failed (SLO, residency audit, invariant, threshold)
    2  usage or config error (bad spec, bad flag, malformed id, unusable output path)
    3  backend unreachable or infrastructure error
    130 interrupted

Every command goes through :func:`geoshard.cli.handling.handles_errors`; with ``--json``
an error also prints ``{"error": {"category", "message", "exit_code"}}`` on stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from geoshard import __version__
from geoshard.cli.handling import (
    EXIT_CODES_HELP,
    GeoshardGroup,
    StdoutConsole,
    emit_json,
    handles_errors,
)
from geoshard.cli.simulate import simulate

app = typer.Typer(
    name="geoshard",
    cls=GeoshardGroup,
    help="Plan, simulate, deploy and break a globally distributed, sharded data layer.\n\n"
    + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = StdoutConsole(highlight=False, width=None if sys.stdout.isatty() else 160)

SpecArg = Annotated[Path, typer.Argument(help="topology spec (YAML), e.g. examples/global.yaml")]
JsonOpt = Annotated[bool, typer.Option(
    "--json", help="print one JSON document on stdout (on an error: {\"error\": {...}})")]


def _version(value: bool) -> None:
    if value:
        print(f"geoshard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """geoshard: one topology spec, four faces (simulate, run locally, deploy, break)."""


# --------------------------------------------------------------------------- validate
@app.command()
@handles_errors
def validate(spec: SpecArg, json_out: JsonOpt = False) -> None:
    """Validate a spec and print its summary: regions, nodes, capacity, residency map."""
    from geoshard.cli.summary import summarize

    summary = summarize(spec)
    if json_out:
        emit_json(summary)
        return
    from geoshard.cli.summary import render_summary

    render_summary(summary, out)


@app.command()
@handles_errors
def schema() -> None:
    """Print the JSON Schema of the topology spec."""
    from geoshard.spec import spec_json_schema

    emit_json(spec_json_schema())


# --------------------------------------------------------------------------- route
@app.command()
@handles_errors
def route(
    spec: SpecArg,
    user: Annotated[str, typer.Option("--user", help="user key '<jurisdiction>:<id>', e.g. eu:42")],
    down: Annotated[list[str] | None, typer.Option(
        "--down", help="a region or node (region/hot-N) to treat as down; repeatable")] = None,
    client: Annotated[str | None, typer.Option(
        "--from", help="the client's region (default: the first home region of the user)")] = None,
    op: Annotated[str, typer.Option(help="read or write")] = "read",
    data_class: Annotated[str, typer.Option("--data-class", help="personal data class")] = "user_features",
    json_out: JsonOpt = False,
) -> None:
    """Explain where a user's data lives and which replicas serve it, and why."""
    from geoshard.cluster.routing import Health, Router
    from geoshard.errors import ConfigError
    from geoshard.spec import load_spec

    s = load_spec(spec)
    router = Router.from_spec(s)
    health = Health.of(down or [])
    known = set(s.regions) | set(router.node_region)
    for d in health.down_nodes | health.down_regions:
        if d not in known:
            from geoshard.errors import did_you_mean

            raise ConfigError(f"--down '{d}' is neither a region nor a node of the spec"
                              f"{did_you_mean(d, sorted(known))}")
    if op not in ("read", "write"):
        raise ConfigError(f"--op '{op}' is not an operation; use read or write")
    # the ring order (primary first) is what a write uses; a read uses the copy nearest
    # the region the request enters at, so the entry is found first
    ring = router.route(user, "write", health, data_class)
    home = s.jurisdiction_regions(ring.key.jurisdiction)
    origin = client or (home[0] if home else next(iter(s.regions)))
    entry = router.entry_region(origin, ring.key, health, data_class)
    r = ring if op == "write" else router.route(ring.key, "read", health, data_class, near=entry)
    primary = ring.replicas[0]
    rtt = {n: round(router.network.rtt_ms(entry, reg), 1) for n, reg in zip(r.replicas, r.regions)}

    def role(i: int, node: str) -> str:
        if op == "write":
            return "primary" if i == 0 else "replica"
        tag = "primary" if node == primary else "replica"
        return f"read ({tag})" if i == 0 else f"fallback ({tag})"

    data = {
        "user": str(r.key), "jurisdiction": r.key.jurisdiction, "data_class": data_class, "op": op,
        "allowed_regions": list(r.allowed_regions),
        "replicas": [{"node": n, "region": reg, "role": role(i, n), "primary": n == primary,
                      "rtt_ms_from_entry": rtt[n]}
                     for i, (n, reg) in enumerate(zip(r.replicas, r.regions))],
        "preferred_replicas": list(r.preferred), "failed_over": r.failed_over,
        "skipped": [{"node": n, "reason": why} for n, why in r.skipped],
        "client_region": origin, "entry_region": entry,
        "down": sorted(health.down_nodes | health.down_regions),
    }
    if json_out:
        emit_json(data)
        return
    out.print(f"user [bold]{r.key}[/] ({data_class}, {op}): jurisdiction "
              f"[bold]{r.key.jurisdiction}[/] may store it in {', '.join(r.allowed_regions)}")
    t = Table("role", "node", "region", "RTT from entry (ms)")
    for row in data["replicas"]:
        t.add_row(row["role"], row["node"], row["region"], f"{row['rtt_ms_from_entry']}")
    out.print(t)
    out.print(f"request from {origin} enters at [bold]{entry}[/] (nearest healthy region allowed "
              f"to process {r.key.jurisdiction} {data_class})")
    for n, why in r.skipped:
        out.print(f"skipped {n}: {why}; failed over along the ring inside {', '.join(r.allowed_regions)}")
    if not r.skipped:
        out.print("no failover: the preferred replicas are healthy")


# --------------------------------------------------------------------------- rebalance
@app.command()
@handles_errors
def rebalance(
    spec: SpecArg,
    add: Annotated[str | None, typer.Option("--add", help="node to add, e.g. eu-west/hot-3")] = None,
    remove: Annotated[str | None, typer.Option("--remove", help="node to remove")] = None,
    weight: Annotated[float, typer.Option(help="weight of an added node")] = 1.0,
    keys: Annotated[int, typer.Option(help="sample of user ids 0..N-1 to measure on")] = 1_000_000,
    json_out: JsonOpt = False,
) -> None:
    """Plan adding or removing a hot-tier node: what moves, against the ideal 1/(n+1)."""
    import numpy as np

    from geoshard.cluster.routing import Router
    from geoshard.errors import ConfigError
    from geoshard.shards import plan_rebalance
    from geoshard.spec import load_spec

    if (add is None) == (remove is None):
        raise ConfigError("give exactly one of --add NODE or --remove NODE")
    if keys <= 0 or keys > 50_000_000:
        raise ConfigError(f"--keys(={keys}) must be in 1..50000000")
    s = load_spec(spec)
    router = Router.from_spec(s)
    old = router.ring
    if add is not None:
        region = add.split("/", 1)[0]
        if "/" not in add or region not in s.regions:
            from geoshard.errors import did_you_mean

            raise ConfigError(f"--add '{add}' must be '<region>/<name>' with a region of the spec"
                              f"{did_you_mean(region, s.regions)}")
        new = old.with_node(add, weight)
    else:
        new = old.without_node(str(remove))
    plan = plan_rebalance(old, new, np.arange(keys, dtype=np.uint64))
    moves = sorted(plan.moves.items(), key=lambda kv: (-kv[1], kv[0]))
    data = {
        "change": f"add {add}" if add else f"remove {remove}",
        "nodes_before": len(old), "nodes_after": len(new), "keys": keys,
        "moved_fraction": plan.moved_fraction, "ideal_fraction": plan.ideal_fraction,
        "ratio_to_ideal": plan.ratio_to_ideal,
        "moved_between_old_nodes": plan.moved_between_kept_nodes,
        "top_moves": [{"from": a, "to": b, "keys": int(c)} for (a, b), c in moves[:10]],
    }
    if json_out:
        emit_json(data)
        return
    out.print(f"{data['change']}: {len(old)} -> {len(new)} nodes, measured on {keys:,} user ids")
    out.print(f"moved {plan.moved_fraction:.4%} of keys; ideal {plan.ideal_fraction:.4%}; "
              f"ratio to ideal {plan.ratio_to_ideal:.3f}; between two old nodes: {plan.moved_between_kept_nodes}")
    t = Table("from", "to", "keys")
    for row in data["top_moves"]:
        t.add_row(row["from"], row["to"], f"{row['keys']:,}")
    out.print(t)


# --------------------------------------------------------------------------- terraform
@app.command()
@handles_errors
def terraform(
    spec: SpecArg,
    out_path: Annotated[Path | None, typer.Option(
        "--out", help="write this file (default: stdout); its directory must exist, an "
        "existing file is replaced")] = None,
    project: Annotated[str | None, typer.Option(help="name prefix of AWS resources")] = None,
) -> None:
    """Write the Terraform variables (terraform.tfvars.json) for terraform/examples/global."""
    from geoshard.cli.preflight import check_output_file, write_file_atomically
    from geoshard.cluster.terraform import tfvars_from_spec
    from geoshard.spec import load_spec

    if out_path is not None:
        check_output_file(out_path)
    warnings: list[str] = []
    data = tfvars_from_spec(load_spec(spec), project, warnings)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if out_path is None:
        sys.stdout.write(text)
        return
    write_file_atomically(out_path, text)
    print(f"wrote {out_path}: {len(data['regions'])} regions, "
          f"{len(data['jurisdictions'])} jurisdictions", file=sys.stderr)


app.command(name="simulate")(simulate)


def main() -> None:
    """Entry point of the ``geoshard`` console script."""
    app()


if __name__ == "__main__":
    main()
