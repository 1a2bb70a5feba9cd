"""The ``geoshard`` command line.

Data goes to stdout (a table for people, ``--json`` for machines); progress, logs and
warnings go to stderr.

Exit codes:
    0  success
    1  ran, but a gate failed (SLO, residency audit, invariant, threshold)
    2  usage or config error (bad spec, bad flag, malformed id)
    3  backend unreachable or infrastructure error
    130 interrupted
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from geoshard import __version__
from geoshard.errors import GeoshardError

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 a gate failed (SLO, residency, invariant); 2 usage or config "
    "error; 3 backend unreachable; 130 interrupted."
)

app = typer.Typer(
    name="geoshard",
    help="Plan, simulate, deploy and break a globally distributed, sharded data layer.\n\n"
    + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])

SpecArg = Annotated[Path, typer.Argument(help="topology spec (YAML), e.g. examples/global.yaml")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (nothing else goes to stdout with --json)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def handles_errors(fn: F) -> F:
    """Turn :class:`GeoshardError` into a message on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GeoshardError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


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
    from geoshard.summary import summarize

    summary = summarize(spec)
    if json_out:
        emit_json(summary)
        return
    from geoshard.summary import render_summary

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
    out_path: Annotated[Path | None, typer.Option("--out", help="write here (default: stdout)")] = None,
    project: Annotated[str | None, typer.Option(help="name prefix of AWS resources")] = None,
) -> None:
    """Write the Terraform variables (terraform.tfvars.json) for terraform/examples/global."""
    from geoshard.cluster.terraform import tfvars_from_spec
    from geoshard.spec import load_spec

    warnings: list[str] = []
    data = tfvars_from_spec(load_spec(spec), project, warnings)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if out_path is None:
        sys.stdout.write(text)
        return
    out_path.write_text(text)
    print(f"wrote {out_path}: {len(data['regions'])} regions, "
          f"{len(data['jurisdictions'])} jurisdictions", file=sys.stderr)


from geoshard.cli_deploy import register as _register_deploy; _register_deploy(app)  # noqa: E402, E702
from geoshard.cli_sim import simulate as _simulate; app.command(name="simulate")(_simulate)  # noqa: E402, E702


def main() -> None:
    """Entry point of the ``geoshard`` console script."""
    app()


if __name__ == "__main__":
    main()
