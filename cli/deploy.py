"""``geoshard up / status / seed / down``: the spec's topology running for real on one machine.

Registered on the main app by ``geoshard.cli.app``. Every command that talks to a
running deployment takes the same ``--dir`` (default ``$GEOSHARD_DIR``, else
``~/.local/state/geoshard/default``). Each command goes through
:func:`geoshard.cli.handling.handles_errors`. Exit codes: 0 ok; 1 ``status`` found a
component down or degraded; 2 usage or config error (a bad spec or flag, a ``--dir`` that
is a file or cannot be written, ``up`` on a running dir, no deployment); 3 a server
failed (``redis-server`` missing, a port taken, a region not healthy in time).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from geoshard.cli.handling import StdoutConsole, emit_json, handles_errors
from geoshard.cli.preflight import check_output_dir
from geoshard.cli.progress import phase_bars
from geoshard.spec import MAX_LOCAL_PROCESSES

__all__ = ["MAX_SEED_ITEMS", "MAX_SEED_USERS", "down", "seed", "status", "up"]

#: Bounds of ``seed --users`` and ``--items``: the seed holds every embedding in memory
#: (64 floats each) and writes each through the stores, about 1,000 per second.
MAX_SEED_USERS = 10_000_000
MAX_SEED_ITEMS = 10_000_000
MAX_SEED = 2**63 - 1

DirOpt = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="the deployment's state dir (default $GEOSHARD_DIR, else "
        "~/.local/state/geoshard/default)",
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", help='print one JSON document on stdout (on an error: {"error": {...}})'
    ),
]
SpecArg = Annotated[Path, typer.Argument(help="topology spec (YAML), e.g. examples/local.yaml")]


def _dir(d: Path | None) -> Path:
    from geoshard.cluster.state import default_dir

    return d if d is not None else default_dir()


def _existing_dir(d: Path | None) -> Path:
    """The ``--dir`` of a command that reads a deployment: a directory, if it exists at all."""
    from geoshard.errors import ConfigError

    root = _dir(d)
    p = root
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        where = "is a file" if p == root else f"lies under the file '{p}'"
        raise ConfigError(
            f"--dir '{root}' {where}, not a deployment's state dir; give the directory "
            "geoshard up was started with"
        )
    return root


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@handles_errors
def up(
    spec: SpecArg,
    dir: DirOpt = None,
    api_workers: Annotated[
        int | None,
        typer.Option(
            "--api-workers",
            min=1,
            max=MAX_LOCAL_PROCESSES,
            help=f"uvicorn workers per region, 1..{MAX_LOCAL_PROCESSES} (default "
            "deploy.api_workers, else regions.<r>.api.workers)",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the spec's topology for real on this machine, every region on loopback.

    Per region: a Redis Cluster (the hot tier), a cache server per shared cache level,
    Milvus Lite, a Parquet dir, a worker and the API (uvicorn); once: the catalog and the
    fault proxy between regions. Returns when every region is healthy. Fails fast,
    stopping what it started (exit 3 when a server cannot start); a second `up` on a
    running --dir exits 2.

    Examples:
        geoshard up examples/local.yaml --dir /tmp/gs
    """
    from geoshard.cluster.launcher import Launcher

    root = _existing_dir(dir)
    check_output_dir(root, "--dir")  # writable (missing parents are created)
    launcher = Launcher(root, log=_say)
    state = launcher.up(spec, api_workers=api_workers)
    apis = {r: st.api.url for r, st in state.regions.items() if st.api is not None}
    if json_out:
        emit_json(
            {
                "dir": str(launcher.dir.root),
                "apis": apis,
                "token_file": str(launcher.dir.token_file),
            }
        )
        return
    print(f"deployment '{state.name}' is up in {launcher.dir.root}")
    for r, url in apis.items():
        print(f"  {r:<14} {url}")
    print(
        f"token: {launcher.dir.token_file}   "
        f"(Authorization: Bearer $(cat {launcher.dir.token_file}))"
    )


@handles_errors
def status(dir: DirOpt = None, json_out: JsonOpt = False) -> None:
    """Health per region and component (pids, ports), replication lag, each region's API URL.

    Exits 1 when a component is down or degraded, 2 when --dir holds no deployment.

    Examples:
        geoshard status --dir /tmp/gs --json
    """
    from geoshard.cluster.state import StateDir
    from geoshard.cluster.status import deployment_status

    report = deployment_status(StateDir(_existing_dir(dir)))
    if json_out:
        emit_json(report)
    else:
        _print_status(report)
    if report["status"] != "up":
        raise typer.Exit(code=1)


def _print_status(report: dict[str, Any]) -> None:
    out = StdoutConsole(highlight=False, width=None if sys.stdout.isatty() else 160)
    out.print(
        f"deployment [bold]{report['name']}[/] in {report['dir']}: [bold]{report['status']}[/]"
    )
    t = Table("region", "component", "status", "pid", "port", "detail")
    for name, reg in report["regions"].items():
        for comp, c in reg["components"].items():
            pid = ",".join(str(p) for p in c.get("pids") or []) or str(c.get("pid") or "")
            t.add_row(
                name,
                comp,
                c["status"],
                pid,
                ",".join(str(p) for p in c.get("ports") or []),
                str(c.get("detail", "")),
            )
    out.print(t)
    lag = Table("region", "replicates to", "lag (entries)", "oldest (s)", "shipped")
    for name, reg in report["regions"].items():
        for target, row in sorted(reg["replication_lag"].items()):
            lag.add_row(
                name, target, str(row["entries"]), f"{row['age_s']:.1f}", str(row["shipped"])
            )
    out.print(lag)
    apis = Table("region", "status", "api")
    for name, reg in report["regions"].items():
        apis.add_row(name, reg["status"], reg["api_url"])
    out.print(apis)
    p = report.get("proxy") or {}
    faults = [
        f"{lk['src']}->{lk['dst']} {lk['mode']}"
        for lk in p.get("links", [])
        if lk.get("mode") != "ok" or lk.get("delay_ms")
    ]
    out.print(
        f"fault proxy: {p.get('status', 'absent')} (pid {p.get('pid')}, control "
        f"127.0.0.1:{p.get('control_port')}); faults: {', '.join(faults) or 'none'}"
    )


@handles_errors
def down(dir: DirOpt = None) -> None:
    """Stop every process of the deployment and remove its state dir; idempotent.

    Examples:
        geoshard down --dir /tmp/gs
    """
    from geoshard.cluster.launcher import Launcher

    launcher = Launcher(_existing_dir(dir), log=_say)
    n = launcher.down()
    print(
        f"stopped {n} processes; removed the deployment in {launcher.dir.root}"
        if n
        else f"nothing was running in {launcher.dir.root}"
    )


@handles_errors
def seed(
    spec: SpecArg,
    users: Annotated[
        int,
        typer.Option(
            "--users", min=0, max=MAX_SEED_USERS, help=f"synthetic users, 0..{MAX_SEED_USERS}"
        ),
    ],
    items: Annotated[
        int,
        typer.Option(
            "--items", min=1, max=MAX_SEED_ITEMS, help=f"synthetic items, 1..{MAX_SEED_ITEMS}"
        ),
    ],
    dir: DirOpt = None,
    seed: Annotated[
        int, typer.Option("--seed", min=0, max=MAX_SEED, help="random seed, in [0, 2**63-1]")
    ] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Write synthetic users and items into a running deployment, residency respected.

    Users get features, embeddings and a home jurisdiction; items get attributes and
    64-d embeddings. Everything goes through the stores, so a datum lands only where its
    jurisdiction allows. The same --seed gives the same data.

    Examples:
        geoshard seed examples/local.yaml --dir /tmp/gs --users 1000 --items 10000
    """
    from geoshard.cluster.seed import seed_deployment
    from geoshard.cluster.state import StateDir

    sd = StateDir(_existing_dir(dir))
    with phase_bars() as progress:
        res = seed_deployment(
            sd, users=users, items=items, spec_path=str(spec), seed=seed, progress=progress
        )
    data = {
        "users": res.users,
        "items": res.items,
        "cold_start_users": res.cold_start_users,
        "writes_by_region": res.writes_by_region,
        "seconds": round(res.seconds, 2),
        "items_version": res.items_version,
    }
    if json_out:
        emit_json(data)
        return
    print(
        f"seeded {res.users} users ({res.cold_start_users} cold-start) and {res.items} "
        f"items in {res.seconds:.1f} s; writes by region: "
        + ", ".join(f"{r} {n}" for r, n in sorted(res.writes_by_region.items()))
    )
