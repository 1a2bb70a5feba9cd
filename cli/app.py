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
from geoshard.cli.chaos import chaos
from geoshard.cli.deploy import down, seed, status, up
from geoshard.cli.handling import (
    EXIT_CODES_HELP,
    GeoshardGroup,
    StdoutConsole,
    emit_json,
    handles_errors,
)
from geoshard.cli.load import load
from geoshard.cli.plan import plan
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
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", help='print one JSON document on stdout (on an error: {"error": {...}})'
    ),
]


def _version(value: bool) -> None:
    if value:
        print(f"geoshard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
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
def _known(kind: str, value: str, known: list[str]) -> str:
    """``"--flag 'x' is not a <kind> of the spec; did you mean 'y'? (known: ...)"`` tail."""
    from geoshard.errors import did_you_mean

    return f"{did_you_mean(value, known)} (known: {', '.join(known)})"


@app.command()
@handles_errors
def route(
    spec: SpecArg,
    user: Annotated[str, typer.Option("--user", help="user key '<jurisdiction>:<id>', e.g. eu:42")],
    down: Annotated[
        list[str] | None,
        typer.Option("--down", help="a region or node (region/hot-N) to treat as down; repeatable"),
    ] = None,
    client: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="the client's region (default: the alphabetically first region of the "
            "user's jurisdiction, e.g. eu-central for eu:42 in examples/local.yaml)",
        ),
    ] = None,
    op: Annotated[str, typer.Option(help="read or write")] = "read",
    data_class: Annotated[
        str,
        typer.Option(
            "--data-class",
            help="personal data class: user_features, user_embeddings, interactions or sessions",
        ),
    ] = "user_features",
    json_out: JsonOpt = False,
) -> None:
    """Explain where a user's data lives and which replicas serve it, and why."""
    from geoshard.cluster.routing import Health, Router
    from geoshard.errors import ConfigError, InputError
    from geoshard.keys import PERSONAL_CLASSES, UserKey
    from geoshard.spec import load_spec

    if op not in ("read", "write"):
        raise ConfigError(f"--op '{op}' is not an operation; use read or write")
    if data_class not in PERSONAL_CLASSES:
        raise ConfigError(
            f"--data-class '{data_class}' is not a personal data class, which the "
            f"user ring routes{_known('class', data_class, list(PERSONAL_CLASSES))}"
        )
    try:
        key = UserKey.parse(user)
    except InputError as exc:
        raise InputError(f"--user: {exc}") from None
    s = load_spec(spec)
    regions = sorted(s.regions)
    if key.jurisdiction not in s.jurisdictions:
        raise ConfigError(
            f"--user '{user}': jurisdiction '{key.jurisdiction}' is not in the spec"
            f"{_known('jurisdiction', key.jurisdiction, sorted(s.jurisdictions))}"
        )
    if client is not None and client not in s.regions:
        raise ConfigError(
            f"--from '{client}' is not a region of the spec{_known('region', client, regions)}"
        )
    router = Router.from_spec(s)
    health = Health.of(down or [])
    for d in sorted(health.down_nodes | health.down_regions):
        if d not in s.regions and d not in router.node_region:
            kind = "node" if "/" in d else "region"
            choices = sorted(router.node_region) if "/" in d else regions
            raise ConfigError(
                f"--down '{d}' is neither a region nor a node of the spec"
                f"{_known(kind, d, choices if len(choices) <= 40 else regions)}"
            )
    # the ring order (primary first) is what a write uses; a read uses the copy nearest
    # the region the request enters at, so the entry is found first
    ring = router.route(key, "write", health, data_class)
    home = s.jurisdiction_regions(ring.key.jurisdiction)
    origin = client or (home[0] if home else regions[0])
    entry = router.entry_region(origin, ring.key, health, data_class)
    r = ring if op == "write" else router.route(ring.key, "read", health, data_class, near=entry)
    primary = ring.replicas[0]
    rtt = {
        n: round(router.network.rtt_ms(entry, reg), 1)
        for n, reg in zip(r.replicas, r.regions, strict=True)
    }

    def role(i: int, node: str) -> str:
        if op == "write":
            return "primary" if i == 0 else "replica"
        tag = "primary" if node == primary else "replica"
        return f"read ({tag})" if i == 0 else f"fallback ({tag})"

    replicas = [
        {
            "node": n,
            "region": reg,
            "role": role(i, n),
            "primary": n == primary,
            "rtt_ms_from_entry": rtt[n],
        }
        for i, (n, reg) in enumerate(zip(r.replicas, r.regions, strict=True))
    ]
    data = {
        "user": str(r.key),
        "jurisdiction": r.key.jurisdiction,
        "data_class": data_class,
        "op": op,
        "allowed_regions": list(r.allowed_regions),
        "replicas": replicas,
        "preferred_replicas": list(r.preferred),
        "failed_over": r.failed_over,
        "skipped": [{"node": n, "reason": why} for n, why in r.skipped],
        "client_region": origin,
        "entry_region": entry,
        "down": sorted(health.down_nodes | health.down_regions),
    }
    if json_out:
        emit_json(data)
        return
    out.print(
        f"user [bold]{r.key}[/] ({data_class}, {op}): jurisdiction "
        f"[bold]{r.key.jurisdiction}[/] may store it in {', '.join(r.allowed_regions)}"
    )
    t = Table("role", "node", "region", "RTT from entry (ms)")
    for row in replicas:
        t.add_row(
            str(row["role"]), str(row["node"]), str(row["region"]), f"{row['rtt_ms_from_entry']}"
        )
    out.print(t)
    out.print(
        f"request from {origin} enters at [bold]{entry}[/] (nearest healthy region allowed "
        f"to process {r.key.jurisdiction} {data_class})"
    )
    for n, why in r.skipped:
        out.print(
            f"skipped {n}: {why}; failed over along the ring inside {', '.join(r.allowed_regions)}"
        )
    if not r.skipped:
        out.print("no failover: the preferred replicas are healthy")


# --------------------------------------------------------------------------- rebalance
#: user ids sampled by ``rebalance --keys``: about 60 bytes of arrays per key and ring
MAX_REBALANCE_KEYS = 10_000_000


@app.command()
@handles_errors
def rebalance(
    spec: SpecArg,
    add: Annotated[
        str | None, typer.Option("--add", help="node to add, '<region>/<name>', e.g. eu-west/hot-3")
    ] = None,
    remove: Annotated[
        str | None, typer.Option("--remove", help="hot node to remove, e.g. eu-west/hot-0")
    ] = None,
    weight: Annotated[
        float,
        typer.Option(
            help="weight of an added node (its ring points: vnodes x weight; the ring holds at "
            "most 4194304)"
        ),
    ] = 1.0,
    keys: Annotated[
        int,
        typer.Option(help=f"sample of user ids 0..N-1 per jurisdiction, 1..{MAX_REBALANCE_KEYS}"),
    ] = 1_000_000,
    json_out: JsonOpt = False,
) -> None:
    """Plan adding or removing a hot-tier node: what moves in each jurisdiction's ring.

    A jurisdiction's keys live only on nodes of the regions its residency allows (the
    ring restricted to them, primary = first allowed node clockwise), so a change moves
    keys only inside the jurisdictions whose allowed regions hold the node. Each such
    ring is measured against its ideal (the share the node gains or loses there).
    """
    import math

    import numpy as np

    from geoshard.cluster.routing import Router
    from geoshard.errors import ConfigError
    from geoshard.keys import PERSONAL_CLASSES
    from geoshard.regions.residency import ResidencyPolicy
    from geoshard.shards import HashRing, plan_rebalance
    from geoshard.spec import RING_POINTS_MAX, load_spec

    if (add is None) == (remove is None):
        raise ConfigError("give exactly one of --add NODE or --remove NODE")
    if not 1 <= keys <= MAX_REBALANCE_KEYS:
        raise ConfigError(
            f"--keys(={keys}) must be in 1..{MAX_REBALANCE_KEYS} (about 60 bytes "
            "per key and ring); e.g. --keys 1000000"
        )
    if add is not None and not (math.isfinite(weight) and weight > 0):
        raise ConfigError(
            f"--weight(={weight:g}) must be a finite number > 0, e.g. 1.0; to take "
            "a node out use --remove"
        )
    s = load_spec(spec)
    router = Router.from_spec(s)
    old = router.ring
    node_region = dict(router.node_region)
    nodes = sorted(node_region)
    if add is not None:
        region, _, name = add.partition("/")
        if not name or region not in s.regions:
            raise ConfigError(
                f"--add '{add}' must be '<region>/<name>' with a region of the spec"
                f"{_known('region', region, sorted(s.regions))}"
            )
        if add in old:
            raise ConfigError(
                f"--add '{add}' is already a hot node of the spec; to change its "
                f"weight set shards.users.weights.{add} in the spec instead"
            )
        points = max(1, round(old.vnodes * weight))
        room = RING_POINTS_MAX - old.point_count
        if points > room:
            raise ConfigError(
                f"--weight(={weight:g}) gives '{add}' {points} ring points "
                f"(vnodes {old.vnodes} x weight); the ring holds {old.point_count} "
                f"of at most {RING_POINTS_MAX}: use --weight "
                f"{math.floor(room / old.vnodes * 100) / 100:g} or less"
            )
        new = old.with_node(add, weight)
        node_region[add] = region
        changed = add
    else:
        assert remove is not None
        if remove not in old:
            raise ConfigError(
                f"--remove '{remove}' is not a hot node of the spec"
                f"{_known('node', remove, nodes if len(nodes) <= 40 else nodes[:40])}"
            )
        if len(old) == 1:
            raise ConfigError(
                f"--remove '{remove}': it is the spec's only hot node; a ring needs one"
            )
        new = old.without_node(remove)
        changed = remove
    policy = ResidencyPolicy.from_spec(s)
    ids = np.arange(keys, dtype=np.uint64)
    rings = []
    for j in sorted(s.jurisdictions):
        # data classes that share their allowed regions share one ring
        groups: dict[frozenset[str], list[str]] = {}
        for dc in PERSONAL_CLASSES:
            groups.setdefault(frozenset(policy.allowed_regions(j, dc, "store")), []).append(dc)
        for allowed, classes in groups.items():
            before = {n: w for n, w in old.weights.items() if node_region[n] in allowed}
            after = {n: w for n, w in new.weights.items() if node_region[n] in allowed}
            row: dict[str, object] = {
                "jurisdiction": j,
                "data_classes": classes,
                "allowed_regions": sorted(allowed),
                "nodes_before": len(before),
                "nodes_after": len(after),
            }
            if node_region[changed] not in allowed:
                row.update(
                    affected=False,
                    moved_fraction=0.0,
                    ideal_fraction=0.0,
                    ratio_to_ideal=1.0,
                    moved_between_old_nodes=0,
                    top_moves=[],
                )
            elif not after:
                raise ConfigError(
                    f"--remove '{changed}' leaves jurisdiction '{j}' "
                    f"({', '.join(classes)}) without a node in "
                    f"{', '.join(sorted(allowed))}; add a node there first"
                )
            else:
                plan = plan_rebalance(
                    HashRing(before, vnodes=old.vnodes), HashRing(after, vnodes=old.vnodes), ids
                )
                moves = sorted(plan.moves.items(), key=lambda kv: (-kv[1], kv[0]))
                row.update(
                    affected=True,
                    moved_fraction=plan.moved_fraction,
                    ideal_fraction=plan.ideal_fraction,
                    ratio_to_ideal=plan.ratio_to_ideal,
                    moved_between_old_nodes=plan.moved_between_kept_nodes,
                    top_moves=[{"from": a, "to": b, "keys": int(c)} for (a, b), c in moves[:10]],
                )
            rings.append(row)
    data = {
        "change": f"add {add}" if add else f"remove {remove}",
        "nodes_before": len(old),
        "nodes_after": len(new),
        "keys_per_ring": keys,
        "rings": rings,
    }
    if json_out:
        emit_json(data)
        return
    out.print(
        f"{data['change']}: {len(old)} -> {len(new)} hot nodes; each jurisdiction's ring "
        f"(its allowed regions only) measured on {keys:,} user ids"
    )
    t = Table(
        "jurisdiction",
        "data classes",
        "regions",
        "nodes",
        "moved",
        "ideal",
        "ratio",
        "between old nodes",
    )
    for row in rings:
        dcs = row["data_classes"]
        assert isinstance(dcs, list)
        shown = "all personal" if len(dcs) == len(PERSONAL_CLASSES) else ", ".join(dcs)
        regs = row["allowed_regions"]
        assert isinstance(regs, list)
        if row["affected"]:
            t.add_row(
                str(row["jurisdiction"]),
                shown,
                ", ".join(regs),
                f"{row['nodes_before']} -> {row['nodes_after']}",
                f"{row['moved_fraction']:.4%}",
                f"{row['ideal_fraction']:.4%}",
                f"{row['ratio_to_ideal']:.3f}",
                str(row["moved_between_old_nodes"]),
            )
        else:
            t.add_row(
                str(row["jurisdiction"]),
                shown,
                ", ".join(regs),
                str(row["nodes_before"]),
                "0 (node not in these regions)",
                "0",
                "",
                "0",
            )
    out.print(t)
    m = Table("jurisdiction", "from", "to", "keys", title="largest moves")
    for row in rings:
        moves_list = row["top_moves"]
        assert isinstance(moves_list, list)
        for mv in moves_list:
            m.add_row(str(row["jurisdiction"]), mv["from"], mv["to"], f"{mv['keys']:,}")
    if m.row_count:
        out.print(m)


# --------------------------------------------------------------------------- terraform
@app.command()
@handles_errors
def terraform(
    spec: SpecArg,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="write this file (default: stdout); its directory must exist, an "
            "existing file is replaced",
        ),
    ] = None,
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
    print(
        f"wrote {out_path}: {len(data['regions'])} regions, "
        f"{len(data['jurisdictions'])} jurisdictions",
        file=sys.stderr,
    )


app.command(name="simulate")(simulate)
app.command(name="plan")(plan)
app.command(name="up")(up)
app.command(name="status")(status)
app.command(name="seed")(seed)
app.command(name="down")(down)
app.command(name="chaos")(chaos)
app.command(name="load")(load)


def main() -> None:
    """Entry point of the ``geoshard`` console script."""
    app()


if __name__ == "__main__":
    main()
