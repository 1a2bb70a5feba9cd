"""Property-based fuzzing of the CLI: mutated specs and flag values never reach a traceback.

Specs are the examples with up to three mutations each (a key dropped, a value retyped,
an extreme number, NaN or infinity, an unknown name, a renamed key) and, on the YAML text,
a duplicated line or an alias bomb. Flags take valid, junk and extreme values. For every
example of ``validate``, ``route``, ``rebalance``, ``terraform``, ``schema``,
``simulate`` (with a tiny duration and a small ``--max-requests``) and the deployment
commands ``up``, ``status``, ``seed`` and ``down`` (which never find a running deployment
and never start one: ``up`` runs with an empty ``PATH``, so a spec and flags that pass
every check end at its first server, ``redis-server not found``, exit 3):

* the exit code is one of 0, 1, 2, 3;
* no traceback is printed and no exception escapes the command;
* with ``--json``, an error still leaves one JSON document on stdout;
* each example finishes within the hypothesis deadline, and memory stays bounded: the
  address space is capped at its size before the run plus 3 GiB, so an attempted huge
  allocation fails the test with MemoryError instead of exhausting the machine (the
  commands must refuse such work up front).

The profile is deterministic (derandomized, no example database): CI runs the same
2,000 + 60 + 300 examples every time.
"""

from __future__ import annotations

import atexit
import copy
import json
import math
import resource
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from geoshard.cli import app

REPO = Path(__file__).resolve().parents[2]
BASES: dict[str, Any] = {
    name: yaml.safe_load((REPO / "examples" / f"{name}.yaml").read_text())
    for name in ("local", "pair")
}
GLOBAL = REPO / "examples" / "global.yaml"
runner = CliRunner()
WORK = Path(tempfile.mkdtemp(prefix="geoshard-fuzz-"))  # strategies write here while drawing
atexit.register(shutil.rmtree, WORK, True)
MAX_RSS_KIB = 3 * 1024 * 1024  # 3 GiB for the whole test process
HEADROOM_BYTES = 3 << 30  # address space an example may add before MemoryError


_AS_LIMIT: list[int] = []


def _invoke_bounded(args: list[str], env: dict[str, str] | None = None) -> Any:
    """Run one command with the address space capped at the first example's size plus headroom.

    A command that tried a huge allocation gets MemoryError (reported as an escaped
    exception) instead of the machine's OOM killer ending the test run; the cap is
    lifted before anything else runs, so the report itself has room.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if not _AS_LIMIT:  # fixed at the first example: failures that keep memory alive
        with open("/proc/self/statm") as fh:  # (tracebacks) cannot raise it
            _AS_LIMIT.append(int(fh.read().split()[0]) * resource.getpagesize() + HEADROOM_BYTES)
    limit = _AS_LIMIT[0]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        return runner.invoke(app, args, env=env)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


EXTREMES = st.sampled_from(
    [
        0,
        -1,
        1,
        2**31,
        2**63,
        2**64,
        10**20,
        1e308,
        -1e308,
        1e-300,
        0.5,
        -0.5,
        math.nan,
        math.inf,
        -math.inf,
        True,
        False,
        "12",
        "1e20",
        "abc",
        "",
        None,
    ]
)
RETYPES = st.sampled_from([None, [], {}, "text", True, [1, 2], {"x": 1}, 3, 2.5])
NAMES = st.sampled_from(["zz-unknown", "eu-wset", "", "a" * 80, "EU", "eu west", "hot-0"])

PROFILE: dict[str, Any] = {
    "derandomize": True,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
}


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((*prefix, i))
            out += _paths(v, (*prefix, i))
    return out


def _at(obj: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        obj = obj[p]
    return obj


@st.composite
def mutated_spec(draw: st.DrawFn, max_mutations: int = 3) -> tuple[str, Any]:
    """A spec text and the (mutated) data it was dumped from."""
    data = copy.deepcopy(BASES[draw(st.sampled_from(sorted(BASES)))])
    for _ in range(draw(st.integers(0, max_mutations))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        parent, key = _at(data, path[:-1]), path[-1]
        op = draw(st.sampled_from(["drop", "retype", "extreme", "extreme", "unknown", "rename"]))
        if op == "drop":
            del parent[key]
        elif op == "retype":
            parent[key] = draw(RETYPES)
        elif op == "extreme":
            parent[key] = draw(EXTREMES)
        elif op == "unknown":
            parent[key] = draw(NAMES)
        elif isinstance(parent, dict):
            parent[f"{key}{draw(st.sampled_from(['x', 's', '_']))}"] = parent.pop(key)
    text = yaml.dump(
        data,
        Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
        sort_keys=False,
        default_flow_style=None,
        width=120,
    )
    lines = text.splitlines()
    extra = draw(
        st.sampled_from(["none", "none", "none", "duplicate-line", "aliases"])
        if max_mutations
        else st.just("none")
    )
    if extra == "duplicate-line" and lines:
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(i, lines[i])
    elif extra == "aliases":
        levels = draw(st.integers(1, 12))
        lines.append("bomb0: &b0 [x, x, x, x, x, x, x, x, x]")
        lines += [
            f"bomb{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 9) + "]" for i in range(1, levels)
        ]
    return "\n".join(lines) + "\n", data


def _regions(data: Any) -> list[str]:
    regs = data.get("regions") if isinstance(data, dict) else None
    return [str(r) for r in regs] if isinstance(regs, dict) else []


JUNK_TEXT = st.one_of(
    st.sampled_from(
        [
            "",
            "-1",
            "nan",
            "inf",
            "1e400",
            "eu",
            "eu:",
            ":1",
            "eu:-1",
            "eu:99999999999999999999",
            "zz:1",
            "x/y/z",
        ]
    ),
    st.text(max_size=12),
)
NUM_TEXT = st.one_of(
    st.sampled_from(
        [
            "0",
            "-1",
            "1",
            "0.5",
            "1e6",
            "1e8",
            "1e308",
            "nan",
            "inf",
            "-inf",
            "2e9",
            "99999999999999999999",
            "abc",
            "",
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**70), 2**70).map(str),
)


@st.composite
def command(draw: st.DrawFn) -> list[str]:
    """A command line for one of validate, route, rebalance, terraform, schema.

    An example mutates the spec or one flag, not both, so that a bad value gets past the
    other checks and reaches the code it could break; a quarter of the examples are valid
    and run to the end.
    """
    mode = draw(st.sampled_from(["valid", "bad-spec", "bad-flag", "bad-flag"]))
    text, data = draw(mutated_spec(3 if mode == "bad-spec" else 0))
    spec = WORK / "spec.yaml"
    spec.write_text(text)
    regions = _regions(data) or ["eu-west"]
    jur = data.get("jurisdictions") if isinstance(data, dict) else None
    jurisdictions = sorted(str(j) for j in jur) if isinstance(jur, dict) and jur else ["eu"]
    flags = [
        "--from",
        "--down",
        "--op",
        "--data-class",
        "--user",
        "--project",
        "--out",
        "--keys",
        "--add",
        "--remove",
        "--weight",
        "change",
    ]
    bad_flag = draw(st.sampled_from(flags)) if mode == "bad-flag" else ""

    def pick(flag: str, good: st.SearchStrategy[Any], junk: st.SearchStrategy[Any]) -> Any:
        return draw(junk if flag == bad_flag else good)

    good_region = st.sampled_from(regions)
    good_node = st.builds(lambda r, i: f"{r}/hot-{i}", good_region, st.integers(0, 3))
    junk_node = st.one_of(
        st.builds(lambda r, i: f"{r}/hot-{i}", good_region, st.integers(-1, 60)), JUNK_TEXT
    )
    json_flag = ["--json"] if draw(st.booleans()) else []
    which = draw(
        st.sampled_from(
            [
                "validate",
                "route",
                "route",
                "rebalance",
                "rebalance",
                "terraform",
                "schema",
                "validate-global",
                "terraform-global",
            ]
        )
    )
    if which == "validate":
        return ["validate", str(spec), *json_flag]
    if which == "validate-global":
        return ["validate", str(GLOBAL), *json_flag]
    if which == "schema":
        return ["schema"]
    if which.startswith("terraform"):
        args = ["terraform", str(GLOBAL if which == "terraform-global" else spec)]
        if draw(st.booleans()) or bad_flag == "--project":
            args += [
                "--project",
                pick(
                    "--project",
                    st.sampled_from(["geoshard-x", "prod"]),
                    st.one_of(st.sampled_from(["Bad_Name", "a", "x" * 30]), JUNK_TEXT),
                ),
            ]
        if draw(st.booleans()) or bad_flag == "--out":
            args += [
                "--out",
                str(
                    pick(
                        "--out",
                        st.just(WORK / "t.json"),
                        st.sampled_from(
                            [WORK, WORK / "spec.yaml" / "t", WORK / "missing" / "t.json"]
                        ),
                    )
                ),
            ]
        return args
    if which == "route":
        user = pick(
            "--user",
            st.builds(
                lambda j, i: f"{j}:{i}", st.sampled_from(jurisdictions), st.integers(0, 2**63 - 1)
            ),
            st.one_of(
                st.builds(
                    lambda j, i: f"{j}:{i}", st.sampled_from(["eu", "zz"]), st.integers(-5, 2**70)
                ),
                JUNK_TEXT,
            ),
        )
        args = ["route", str(spec), "--user", user, *json_flag]
        if draw(st.booleans()) or bad_flag == "--from":
            args += ["--from", pick("--from", good_region, JUNK_TEXT)]
        if draw(st.booleans()) or bad_flag == "--down":
            for d in pick(
                "--down",
                st.lists(st.one_of(good_region, good_node), max_size=3),
                st.lists(st.one_of(JUNK_TEXT, junk_node), min_size=1, max_size=3),
            ):
                args += ["--down", d]
        if draw(st.booleans()) or bad_flag == "--op":
            args += [
                "--op",
                pick(
                    "--op",
                    st.sampled_from(["read", "write"]),
                    st.sampled_from(["delete", "", "READ"]),
                ),
            ]
        if draw(st.booleans()) or bad_flag == "--data-class":
            args += [
                "--data-class",
                pick(
                    "--data-class",
                    st.sampled_from(["user_features", "sessions"]),
                    st.sampled_from(["item_catalog", "nope", ""]),
                ),
            ]
        return args
    args = [
        "rebalance",
        str(spec),
        *json_flag,
        "--keys",
        pick("--keys", st.integers(1, 5000).map(str), NUM_TEXT),
    ]
    change = pick(
        "change", st.sampled_from(["--add", "--remove"]), st.sampled_from(["both", "none"])
    )
    if change in ("--add", "both"):
        args += [
            "--add",
            pick(
                "--add",
                st.builds(lambda r, i: f"{r}/new-{i}", good_region, st.integers(0, 9)),
                junk_node,
            ),
        ]
        if draw(st.booleans()) or bad_flag == "--weight":
            args += ["--weight", pick("--weight", st.floats(0.01, 5).map(repr), NUM_TEXT)]
    if change in ("--remove", "both"):
        args += ["--remove", pick("--remove", good_node, junk_node)]
    return args


def _check(args: list[str], env: dict[str, str] | None = None) -> None:
    res = _invoke_bounded(args, env)
    where = f"geoshard {' '.join(args)}"
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"{where}: {res.exception!r}") from res.exception
    assert res.exit_code in (0, 1, 2, 3), f"{where}: exit {res.exit_code}\n{res.stderr[-2000:]}"
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, where
    if "--json" in args and res.exit_code == 2:
        doc = json.loads(res.stdout)
        assert doc["error"]["exit_code"] == 2, where
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < MAX_RSS_KIB, where


@settings(max_examples=2000, deadline=timedelta(seconds=10), **PROFILE)
@given(args=command())
def test_commands_on_mutated_specs_and_flags_never_trace_back(args: list[str]) -> None:
    _check(args)


@st.composite
def simulate_command(draw: st.DrawFn) -> list[str]:
    """``simulate`` with one parameter at a time taken from its bad values (or none)."""
    bad = draw(st.sampled_from(["none", "spec", "duration", "seed", "scale", "warmup"]))
    text, _ = draw(mutated_spec(3 if bad == "spec" else 0))
    path = WORK / "sim.yaml"
    path.write_text(text)
    duration = draw(
        st.sampled_from(
            ["0", "-1", "nan", "inf", "1e8", "86401"] if bad == "duration" else ["0.2", "0.5", "1"]
        )
    )
    seed = draw(
        st.one_of(st.integers(-(2**64), -1), st.integers(2**63, 2**70)).map(str)
        if bad == "seed"
        else st.integers(0, 2**63 - 1).map(str)
    )
    scale = draw(
        st.sampled_from(
            ["0", "2", "nan", "-0.5", "inf"] if bad == "scale" else ["1", "0.5", "0.01"]
        )
    )
    args = [
        "simulate",
        str(path),
        "--duration",
        duration,
        "--seed",
        seed,
        "--scale",
        scale,
        "--out",
        str(WORK / "run"),
        "--max-requests",
        "20000",
    ]
    if bad == "warmup":
        args += ["--warmup", draw(st.sampled_from(["-1", "nan", "1", "5", "inf"]))]
    elif draw(st.booleans()):
        args += ["--warmup", "0.1"]
    if draw(st.booleans()):
        args.append("--json")
    return args


@settings(max_examples=60, deadline=timedelta(seconds=30), **PROFILE)
@given(args=simulate_command())
def test_simulate_on_mutated_specs_and_flags_never_traces_back(args: list[str]) -> None:
    _check(args)


# --------------------------------------------------------------------------- up, status, seed, down
NO_BIN = WORK / "no-bin"  # the PATH of `up`: no redis-server, so no server can start
NO_BIN.mkdir()
#: --dir values: fresh (no deployment), a file, under a file, and state files that are
#: not a deployment's; the default --dir ($GEOSHARD_DIR) is a fresh one under WORK too
STATE_FILES = {
    "json-list": "[1]",
    "json-empty": "{}",
    "garbage": "not json {",
    "old-schema": '{"schema_version": 0}',
    "dir": None,
}


def _state_dirs() -> dict[str, Path]:
    dirs = {}
    for name, text in STATE_FILES.items():
        d = WORK / "states" / name
        d.mkdir(parents=True, exist_ok=True)
        if text is None:
            (d / "state.json").mkdir(exist_ok=True)
        else:
            (d / "state.json").write_text(text)
        dirs[name] = d
    return dirs


STATE_DIRS = _state_dirs()
_fresh = iter(range(10**9))


@st.composite
def deploy_command(draw: st.DrawFn) -> tuple[list[str], Path | None]:
    """A command line of up, status, seed or down, and the fresh --dir it names (if any)."""
    which = draw(st.sampled_from(["up", "up", "seed", "status", "down"]))
    bad = draw(st.sampled_from(["none", "spec", "dir", "flag"]))
    fresh: Path | None = WORK / "fresh" / str(next(_fresh))
    dir_args = ["--dir", str(fresh)]
    if bad == "dir":
        fresh = None
        target = draw(st.sampled_from([*sorted(STATE_DIRS), "file", "under-file"]))
        d = {"file": WORK / "spec.yaml", "under-file": WORK / "spec.yaml" / "state"}.get(
            target, STATE_DIRS.get(target)
        )
        dir_args = ["--dir", str(d)]
    elif draw(st.booleans()):
        dir_args = []  # the default: $GEOSHARD_DIR, a fresh dir too
    json_flag = ["--json"] if which != "down" and draw(st.booleans()) else []
    if which in ("status", "down"):
        return [which, *dir_args, *json_flag], fresh
    text, _ = draw(mutated_spec(3 if bad == "spec" else 0))
    path = WORK / "deploy.yaml"
    path.write_text(text)
    args = [which, str(path), *dir_args, *json_flag]

    def num(good: st.SearchStrategy[str]) -> str:
        return draw(NUM_TEXT if bad == "flag" else good)

    if which == "up":
        if bad == "flag" or draw(st.booleans()):
            args += ["--api-workers", num(st.integers(1, 4).map(str))]
        return args, fresh
    args += [
        "--users",
        num(st.integers(0, 50).map(str)),
        "--items",
        num(st.integers(1, 50).map(str)),
    ]
    if draw(st.booleans()):
        args += ["--seed", num(st.integers(0, 2**63 - 1).map(str))]
    return args, fresh


@settings(max_examples=300, deadline=timedelta(seconds=10), **PROFILE)
@given(cmd=deploy_command())
def test_deploy_commands_never_trace_back_and_start_nothing(
    cmd: tuple[list[str], Path | None],
) -> None:
    args, fresh = cmd
    default = WORK / "fresh" / "default"
    _check(args, env={"PATH": str(NO_BIN), "GEOSHARD_DIR": str(default)})
    for d in (fresh, default):  # nothing is written where no deployment runs
        assert d is None or not d.exists(), f"geoshard {' '.join(args)} wrote {d}"
    for name, text in STATE_FILES.items():  # and nothing that is not ours is removed
        state = STATE_DIRS[name] / "state.json"
        assert state.is_dir() if text is None else state.read_text() == text, state
