"""``geoshard up / status / down / seed``: the spec's topology running for real on one machine.

Registered on the main app by ``geoshard.cli``. Every command that talks to a running
deployment takes the same ``--dir`` (default ``$GEOSHARD_DIR``, else
``~/.local/state/geoshard/default``). Exit codes: 0 ok; 1 ``status`` found a component
down; 2 usage or config error (a bad spec, ``up`` on a running dir, no deployment);
3 a server failed (``redis-server`` missing, a port taken, a region not healthy in time).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["down", "register", "seed", "status", "up"]

DirOpt = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="the deployment's state dir (default $GEOSHARD_DIR, else "
        "~/.local/state/geoshard/default)",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
SpecArg = Annotated[Path, typer.Argument(help="topology spec (YAML), e.g. examples/local.yaml")]


def _dir(d: Path | None) -> Path:
    from geoshard.cluster.state import default_dir

    return d if d is not None else default_dir()


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _run(fn: Any) -> None:
    from geoshard.errors import GeoshardError

    try:
        fn()
    except GeoshardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(code=exc.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise typer.Exit(code=130) from None


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def up(
    spec: SpecArg,
    dir: DirOpt = None,
    api_workers: Annotated[
        int | None,
        typer.Option(
            "--api-workers",
            min=1,
            help="uvicorn workers per region (default deploy.api_workers, "
            "else regions.<r>.api.workers)",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Start the topology on loopback: per region a Redis Cluster, cache servers, Milvus
    Lite, a Parquet dir, a worker and the API; one catalog; the fault proxy between regions.

    Fails fast, stopping what it started. A second `up` on a running --dir exits 2.

    Examples:
        geoshard up examples/local.yaml --dir /tmp/gs
    """

    def run() -> None:
        from geoshard.cluster.launcher import Launcher

        launcher = Launcher(_dir(dir), log=_say)
        state = launcher.up(spec, api_workers=api_workers)
        apis = {r: st.api.url for r, st in state.regions.items() if st.api is not None}
        if json_out:
            _emit(
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
            f"token: {launcher.dir.token_file}   (Authorization: Bearer $(cat {launcher.dir.token_file}))"
        )

    _run(run)


def status(dir: DirOpt = None, json_out: JsonOpt = False) -> None:
    """Health per region and component (pids, ports), replication lag, each region's API URL.

    Exits 1 when a component is down or degraded.

    Examples:
        geoshard status --dir /tmp/gs --json
    """

    def run() -> None:
        from rich.console import Console
        from rich.table import Table

        from geoshard.cluster.state import StateDir
        from geoshard.cluster.status import deployment_status

        report = deployment_status(StateDir(_dir(dir)))
        if json_out:
            _emit(report)
        else:
            out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
            out.print(
                f"deployment [bold]{report['name']}[/] in {report['dir']}: "
                f"[bold]{report['status']}[/]"
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
                        name,
                        target,
                        str(row["entries"]),
                        f"{row['age_s']:.1f}",
                        str(row["shipped"]),
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
        if report["status"] != "up":
            raise typer.Exit(code=1)

    _run(run)


def down(dir: DirOpt = None) -> None:
    """Stop every process of the deployment and remove its state dir; idempotent.

    Examples:
        geoshard down --dir /tmp/gs
    """

    def run() -> None:
        from geoshard.cluster.launcher import Launcher

        launcher = Launcher(_dir(dir), log=_say)
        n = launcher.down()
        print(
            f"stopped {n} processes; removed the deployment in {launcher.dir.root}"
            if n
            else f"nothing was running in {launcher.dir.root}"
        )

    _run(run)


def seed(
    spec: SpecArg,
    users: Annotated[int, typer.Option("--users", min=0, help="synthetic users")],
    items: Annotated[int, typer.Option("--items", min=1, help="synthetic items")],
    dir: DirOpt = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="random seed")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Write synthetic users (features, embeddings, home jurisdiction) and items
    (attributes, 64-d embeddings) through the stores, residency respected.

    Examples:
        geoshard seed examples/local.yaml --dir /tmp/gs --users 1000 --items 10000
    """

    def run() -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from geoshard.cluster.seed import seed_deployment
        from geoshard.cluster.state import StateDir

        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            disable=not sys.stderr.isatty(),
            transient=True,
        )
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        with bar:
            res = seed_deployment(
                StateDir(_dir(dir)),
                users=users,
                items=items,
                spec_path=str(spec),
                seed=seed,
                progress=progress,
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
            _emit(data)
            return
        print(
            f"seeded {res.users} users ({res.cold_start_users} cold-start) and {res.items} "
            f"items in {res.seconds:.1f} s; writes by region: "
            + ", ".join(f"{r} {n}" for r, n in sorted(res.writes_by_region.items()))
        )

    _run(run)


def register(app: typer.Typer) -> None:
    """Add ``up``, ``status``, ``down`` and ``seed`` to the ``geoshard`` app."""
    app.command(name="up")(up)
    app.command(name="status")(status)
    app.command(name="down")(down)
    app.command(name="seed")(seed)
