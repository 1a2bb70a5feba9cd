"""Bad input through the CLI: exit 2 with a message naming the value and the fix, no traceback.

One section per defect class of issue 11 (part 2). Each case runs the real command with
typer's CliRunner and checks the exit code, that no traceback was printed, and the message.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from geoshard.cli import app

REPO = Path(__file__).resolve().parents[2]
LOCAL_PATH = REPO / "examples" / "local.yaml"
LOCAL = LOCAL_PATH.read_text()
GLOBAL = (REPO / "examples" / "global.yaml").read_text()
runner = CliRunner()


def _invoke(args: list[str]) -> Result:
    res = runner.invoke(app, args)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    return res


def _refused(args: list[str], pattern: str, code: int = 2) -> Result:
    res = _invoke(args)
    assert res.exit_code == code, (res.exit_code, res.stdout[-2000:], res.stderr[-2000:])
    assert re.search(pattern, res.stderr), res.stderr
    return res


def _spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# --------------------------------------------------------------------------- unreadable input


def test_non_utf8_spec_names_the_byte_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(LOCAL.replace("name: local", "name: caf\u00e9", 1).encode("latin-1"))
    _refused(
        ["validate", str(path)],
        r"latin1\.yaml:\d+: the spec is not UTF-8 text \(byte 0xe9 at line \d+, column \d+\); "
        r"save the file as UTF-8",
    )


def test_a_directory_as_spec(tmp_path: Path) -> None:
    _refused(
        ["route", str(tmp_path), "--user", "eu:1"],
        r"is a directory, not a spec file; give a YAML file",
    )


def test_unreadable_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tests run as root in CI, where chmod 000 does not stop a read: refuse the open instead
    path = Path(_spec(tmp_path, LOCAL))
    real_open = Path.open

    def guarded(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", guarded)
    _refused(["validate", str(path)], r"cannot read the spec: permission denied; make it readable")


def test_a_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(LOCAL + "#" * (2 << 20) + "\n")
    _refused(["validate", str(path)], r"larger than 1048576 bytes")


# --------------------------------------------------------------------------- YAML hazards


def _laughs(levels: int) -> str:
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, levels):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    return text


def test_billion_laughs_is_refused_without_expanding(tmp_path: Path) -> None:
    import resource
    import time

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    _refused(
        ["validate", _spec(tmp_path, _laughs(10))],
        r"spec\.yaml:\d+: the document expands to more than 200000 values through YAML "
        r"aliases .*use fewer aliases",
    )
    assert time.perf_counter() - t0 < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_an_alias_cycle_is_refused(tmp_path: Path) -> None:
    _refused(
        ["validate", _spec(tmp_path, "a: &a [1, *a]\n")],
        r"alias refers to a value that contains it",
    )


def test_small_aliases_still_work(tmp_path: Path) -> None:
    api = "api: {servers: 1, workers: 8, service_time: {dist: exponential, mean_ms: 1.0}}"
    text = LOCAL.replace(api, "api: *api").replace("api: *api", "api: &api " + api[5:], 1)
    assert text.count("*api") == 2
    res = _invoke(["validate", _spec(tmp_path, text), "--json"])
    assert res.exit_code == 0, res.stderr
    assert all(r["api_servers"] == 1 for r in json.loads(res.stdout)["regions"])


def test_duplicate_key_names_both_lines(tmp_path: Path) -> None:
    text = _edit(LOCAL, "caches:\n", "caches: {}\ncaches:\n")
    first = text.splitlines().index("caches: {}") + 1
    _refused(
        ["validate", _spec(tmp_path, text)],
        rf"spec\.yaml:{first + 1}: caches: duplicate key 'caches' \(first at line {first}\); "
        r"keep one of them",
    )


def test_duplicate_nested_key(tmp_path: Path) -> None:
    text = _edit(LOCAL, "hot: {nodes: 3,", "hot: {nodes: 3, nodes: 5,")
    _refused(
        ["validate", _spec(tmp_path, text)],
        r"regions\.eu-west\.hot\.nodes: duplicate key 'nodes' \(first at line \d+\)",
    )


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("hot: {nodes: 3,", "hot: {nodes: true,", r"regions\.eu-west\.hot\.nodes"),
        ("users: 100000\n", "users: yes\n", r"workload\.users"),
        ("eu-west: 300", "eu-west: false", r"workload\.peak_qps\.eu-west"),
    ],
)
def test_booleans_are_not_numbers(tmp_path: Path, old: str, new: str, path: str) -> None:
    _refused(
        ["validate", _spec(tmp_path, _edit(LOCAL, old, new))],
        rf"spec\.yaml:\d+: {path}: (true|false) is not a number; write a number",
    )


def test_text_is_not_a_number_but_yaml11_exponents_are(tmp_path: Path) -> None:
    _refused(
        ["validate", _spec(tmp_path, _edit(LOCAL, "users: 100000\n", "users: lots\n"))],
        r"workload\.users: 'lots' is not a number; write a number",
    )
    # PyYAML reads 1e5 as text; it is still the number a reader sees
    res = _invoke(
        ["validate", _spec(tmp_path, _edit(LOCAL, "users: 100000\n", "users: 1e5\n")), "--json"]
    )
    assert res.exit_code == 0 and json.loads(res.stdout)["totals"]["users"] == 100000


# --------------------------------------------------------------------------- spec bounds


@pytest.mark.parametrize(
    ("old", "new", "pattern"),
    [
        (
            "users: 100000\n",
            "users: 100000000000000000000\n",
            r"workload\.users: must be <= 9223372036854775807 \(got 100000000000000000000\)",
        ),
        (
            "eu-west: 300",
            "eu-west: 1.0e+308",
            r"workload\.peak_qps\.eu-west: must be <= 1000000000",
        ),
        ("eu-west: 300", "eu-west: .inf", r"workload\.peak_qps\.eu-west: must be a finite number"),
        ("eu-west: 300", "eu-west: .nan", r"workload\.peak_qps\.eu-west: must be a finite number"),
        (
            "dist: exponential, mean_ms: 1.0",
            "dist: exponential, mean_ms: 1.0e+300",
            r"regions\.eu-west\.api\.service_time\.mean_ms: must be <= 86400000",
        ),
        (
            "hot: {nodes: 3,",
            "hot: {nodes: 20000,",
            r"regions\.eu-west\.hot\.nodes: must be <= 10000",
        ),
        (
            "fiber_km_per_ms: 200.0",
            "fiber_km_per_ms: 1.0e-300",
            r"network\.fiber_km_per_ms: must be >= 1",
        ),
    ],
)
def test_numbers_beyond_what_the_code_can_run_are_refused(
    tmp_path: Path, old: str, new: str, pattern: str
) -> None:
    _refused(["validate", _spec(tmp_path, _edit(LOCAL, old, new))], pattern)


def test_thousands_of_hot_nodes_are_refused_with_the_vnodes_that_fit(tmp_path: Path) -> None:
    text = GLOBAL.replace("hot: {nodes: 48,", "hot: {nodes: 3000,")
    res = _refused(
        ["route", _spec(tmp_path, text), "--user", "eu:1"],
        r"shards\.users: the user ring would hold 55296000 points .*at most 4194304 "
        r".*set shards\.users\.vnodes to 233 or less",
    )
    # the advice works
    fixed = text.replace("  users:\n", "  users:\n    vnodes: 233\n", 1)
    assert "vnodes: 233" in fixed
    res = _invoke(["validate", _spec(tmp_path, fixed, "fixed.yaml"), "--json"])
    assert res.exit_code == 0, res.stderr


def test_spec_default_vnodes_is_the_rings() -> None:
    from geoshard.shards import DEFAULT_VNODES
    from geoshard.spec import DEFAULT_RING_VNODES

    assert DEFAULT_RING_VNODES == DEFAULT_VNODES


def test_ring_points_counts_what_the_router_builds() -> None:
    from geoshard.cluster.routing import Router
    from geoshard.spec import parse_spec, ring_points

    text = _edit(
        LOCAL,
        "    replication: 2\n  items",
        "    replication: 2\n    vnodes: 100\n    weights: {eu-west/hot-0: 2.5}\n  items",
    )
    spec = parse_spec(text)
    assert ring_points(spec) == Router.from_spec(spec).ring.point_count


# --------------------------------------------------------------------------- output paths


def _unwritable_dir(tmp_path: Path) -> Path:
    """A directory this process cannot write in (root ignores permission bits)."""
    import os

    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o500)
        return d
    for candidate in (Path("/sys"), Path("/proc")):
        try:
            (candidate / ".geoshard-probe").touch()
        except OSError:
            return candidate
        (candidate / ".geoshard-probe").unlink()
    pytest.skip("no unwritable directory on this machine for root")


def _sim(out: str, *more: str) -> list[str]:
    return ["simulate", str(LOCAL_PATH), "--duration", "1", "--out", out, *more]


def test_simulate_out_is_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("keep me")
    _refused(
        _sim(str(tmp_path / "f")),
        r"--out '.*f' is an existing file, but a run directory is needed; give a directory path",
    )
    assert (tmp_path / "f").read_text() == "keep me"


def test_simulate_out_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    _refused(
        _sim(str(tmp_path / "f" / "run")),
        r"'.*f' is a file, so no directory can be created under it",
    )


def test_simulate_out_unwritable_fails_before_simulating(tmp_path: Path) -> None:
    import time

    t0 = time.perf_counter()
    _refused(
        [
            "simulate",
            str(LOCAL_PATH),
            "--duration",
            "3000",
            "--out",
            str(_unwritable_dir(tmp_path) / "run"),
        ],
        r"--out '.*run': cannot write in '.*' \(.*\); choose a writable path",
    )
    assert time.perf_counter() - t0 < 10  # a 3000 s run would take minutes


def test_simulate_out_missing_parents_are_created(tmp_path: Path) -> None:
    res = _invoke(_sim(str(tmp_path / "a" / "b" / "run"), "--json"))
    assert res.exit_code in (0, 1), res.stderr
    assert (tmp_path / "a" / "b" / "run" / "result.json").is_file()


def test_terraform_out_is_a_directory(tmp_path: Path) -> None:
    _refused(
        ["terraform", str(LOCAL_PATH), "--out", str(tmp_path)],
        r"--out '.*' is a directory, but a file is needed; give a file path such as "
        r".*terraform\.tfvars\.json",
    )


def test_terraform_out_missing_parent_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "nope" / "t.json"
    _refused(
        ["terraform", str(LOCAL_PATH), "--out", str(target)],
        r"the directory '.*nope' does not exist; create it \(mkdir -p .*nope\) or choose "
        r"another path",
    )
    assert not (tmp_path / "nope").exists()


def test_terraform_out_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    _refused(
        ["terraform", str(LOCAL_PATH), "--out", str(tmp_path / "f" / "t.json")],
        r"'.*f' is a file, so nothing can be created under it",
    )


def test_terraform_out_unwritable(tmp_path: Path) -> None:
    _refused(
        ["terraform", str(LOCAL_PATH), "--out", str(_unwritable_dir(tmp_path) / "t.json")],
        r"cannot write in '.*' \(.*\); choose a writable path",
    )


def test_terraform_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "t.json"
    target.write_text("old")
    res = _invoke(["terraform", str(LOCAL_PATH), "--out", str(target)])
    assert res.exit_code == 0, res.stderr
    assert json.loads(target.read_text())["project"] == "geoshard-local"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]  # no temporary left


# --------------------------------------------------------------------------- simulate bounds


@pytest.mark.parametrize(
    ("flags", "pattern"),
    [
        (["--seed", "-1"], r"--seed\(=-1\) must be an integer in \[0, 9223372036854775807\]"),
        (
            ["--seed", str(2**63)],
            r"--seed\(=9223372036854775808\) must be an integer in \[0, 9223372036854775807\]",
        ),
        (
            ["--duration", "1e8"],
            r"--duration\(=1e\+08\) must be a number of seconds in \(0, 86400\]",
        ),
        (["--duration", "nan"], r"--duration\(=nan\) must be"),
        (["--duration", "-5"], r"--duration\(=-5\) must be"),
        (["--scale", "inf"], r"--scale\(=inf\) must be in \(0, 1\]"),
        (["--warmup", "100"], r"--warmup\(=100\) must be >= 0 and below --duration \(=60\)"),
        (["--max-requests", "0"], r"--max-requests\(=0\) must be an integer in \[1, "),
    ],
)
def test_simulate_flags_out_of_bounds(tmp_path: Path, flags: list[str], pattern: str) -> None:
    _refused(["simulate", str(LOCAL_PATH), "--out", str(tmp_path / "run"), *flags], pattern)
    assert not (tmp_path / "run").exists()


def test_peak_qps_that_would_run_for_days_is_refused_up_front(tmp_path: Path) -> None:
    spec = _spec(tmp_path, _edit(LOCAL, "eu-west: 300", "eu-west: 1.0e+9"))
    _refused(
        ["simulate", spec, "--duration", "10", "--out", str(tmp_path / "run")],
        r"the run would simulate about 1e\+10 requests .*at most --max-requests 100000000 "
        r".*shorten --duration \(to 0\.1 s or less\), lower --scale, or raise --max-requests",
    )


def test_max_requests_comes_from_the_environment_too(tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        ["simulate", str(LOCAL_PATH), "--duration", "10", "--out", str(tmp_path / "run")],
        env={"GEOSHARD_MAX_REQUESTS": "1000"},
    )
    assert res.exit_code == 2 and "at most --max-requests 1000 " in res.stderr, res.stderr


def test_users_beyond_the_simulators_id_space(tmp_path: Path) -> None:
    spec = _spec(tmp_path, _edit(LOCAL, "users: 100000\n", "users: 9000000000000000000\n"))
    _refused(
        ["simulate", spec, "--duration", "1", "--out", str(tmp_path / "run")],
        r"workload\.users x users_by_jurisdiction\.eu = 5400000000000000000 users; the "
        r"simulator maps ids in int64 up to 3474701543 per jurisdiction: lower "
        r"workload\.users",
    )


def test_a_tiny_day_with_many_steps_is_refused(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        _edit(
            LOCAL,
            "  diurnal: [1.0]\n",
            "  day_s: 1\n  diurnal: [" + ", ".join(["1.0"] * 1000) + "]\n",
        ),
    )
    _refused(
        ["simulate", spec, "--duration", "3000", "--out", str(tmp_path / "run")],
        r"the workload rate changes 3000000 times .*at most 2000000 rate cells: raise "
        r"workload\.day_s",
    )


def test_expected_requests_matches_a_short_run(tmp_path: Path) -> None:
    from geoshard.cli.preflight import expected_requests
    from geoshard.spec import load_spec

    res = _invoke(
        [
            "simulate",
            str(REPO / "examples" / "global.yaml"),
            "--scale",
            "0.001",
            "--duration",
            "60",
            "--out",
            str(tmp_path / "run"),
            "--json",
        ]
    )
    arrivals = json.loads(res.stdout)["metrics"]["arrivals"]
    expected = expected_requests(load_spec(REPO / "examples" / "global.yaml"), 60, 0.001)
    assert abs(arrivals - expected) < 5 * expected**0.5  # Poisson: within 5 sigma


# --------------------------------------------------------------------------- route and rebalance messages


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (
            ["--user", "eu:42", "--from", "mars"],
            r"--from 'mars' is not a region of the spec \(known: eu-central, eu-west, us-east\)",
        ),
        (
            ["--user", "eu:42", "--from", "eu-wst"],
            r"--from 'eu-wst' is not a region of the spec; did you mean 'eu-west'\?",
        ),
        (
            ["--user", "eu:42", "--data-class", "item_catalog"],
            (
                r"--data-class 'item_catalog' is not a personal data class, which the user ring routes \(known: "
                r"user_features, user_embeddings, interactions, sessions\)"
            ),
        ),
        (
            ["--user", "eu:x"],
            r"--user: user key 'eu:x' is malformed; expected '<jurisdiction>:<non-negative integer>'",
        ),
        (
            ["--user", "uk:1"],
            r"--user 'uk:1': jurisdiction 'uk' is not in the spec.*\(known: eu, us\)",
        ),
        (
            ["--user", "eu:1", "--down", "mars"],
            r"--down 'mars' is neither a region nor a node of the spec",
        ),
        (
            ["--user", "eu:1", "--op", "delete"],
            r"--op 'delete' is not an operation; use read or write",
        ),
    ],
)
def test_route_messages_name_the_flag(args: list[str], pattern: str) -> None:
    res = _refused(["route", str(LOCAL_PATH), *args], pattern)
    assert "Router." not in res.stderr and "()" not in res.stderr


def test_route_from_help_describes_the_default_the_code_uses() -> None:
    res = _invoke(["route", str(LOCAL_PATH), "--user", "eu:42", "--json"])
    assert json.loads(res.stdout)["client_region"] == "eu-central"
    helptext = " ".join(_invoke(["route", "--help"]).stdout.replace("│", " ").split())
    assert "default: the alphabetically first region of the user's jurisdiction" in helptext


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (
            ["--add", "eu-west/hot-9", "--weight", "1e6"],
            (
                r"--weight\(=1e\+06\) gives 'eu-west/hot-9' 3072000000 ring points .*at most 4194304: use "
                r"--weight 1356\.33 or less"
            ),
        ),
        (
            ["--add", "eu-west/hot-9", "--weight", "nan"],
            r"--weight\(=nan\) must be a finite number > 0",
        ),
        (
            ["--add", "eu-west/hot-9", "--weight", "0"],
            r"--weight\(=0\) must be a finite number > 0",
        ),
        (
            ["--add", "eu-west/hot-0"],
            (
                r"--add 'eu-west/hot-0' is already a hot node of the spec; to change its weight set "
                r"shards\.users\.weights\.eu-west/hot-0 in the spec"
            ),
        ),
        (
            ["--add", "eu-wst/hot-9"],
            r"--add 'eu-wst/hot-9' must be '<region>/<name>' with a region of the spec; did you mean 'eu-west'",
        ),
        (["--add", "eu-west/"], r"--add 'eu-west/' must be '<region>/<name>'"),
        (
            ["--remove", "eu-wst/hot-0"],
            r"--remove 'eu-wst/hot-0' is not a hot node of the spec; did you mean 'eu-west/hot-0'",
        ),
        (
            ["--add", "eu-west/hot-9", "--keys", "100000000"],
            r"--keys\(=100000000\) must be in 1\.\.10000000",
        ),
        (
            ["--add", "eu-west/hot-9", "--remove", "eu-west/hot-0"],
            r"give exactly one of --add NODE or --remove NODE",
        ),
    ],
)
def test_rebalance_messages_name_the_flag(args: list[str], pattern: str) -> None:
    res = _refused(["rebalance", str(LOCAL_PATH), *args], pattern)
    assert "with_weight" not in res.stderr and "without_node" not in res.stderr


def test_the_weight_the_message_advises_is_accepted() -> None:
    res = _invoke(
        [
            "rebalance",
            str(LOCAL_PATH),
            "--add",
            "eu-west/hot-9",
            "--weight",
            "1356.33",
            "--keys",
            "1000",
            "--json",
        ]
    )
    assert res.exit_code == 0, res.stderr


# --------------------------------------------------------------------------- rebalance per jurisdiction


def _rebalance(args: list[str]) -> dict[str, object]:
    res = _invoke(["rebalance", str(LOCAL_PATH), "--keys", "200000", "--json", *args])
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert isinstance(data, dict)
    return data


def test_moves_stay_inside_each_jurisdictions_regions() -> None:
    data = _rebalance(["--add", "eu-west/hot-9"])
    rings = {r["jurisdiction"]: r for r in data["rings"]}  # type: ignore[attr-defined]
    # local.yaml: eu data in eu-west and eu-central; a rule lets us data live in eu-west too
    assert rings["eu"]["allowed_regions"] == ["eu-central", "eu-west"]
    assert rings["us"]["allowed_regions"] == ["eu-west", "us-east"]
    for ring in rings.values():
        assert ring["affected"] and ring["moved_between_old_nodes"] == 0
        for mv in ring["top_moves"]:
            assert mv["to"] == "eu-west/hot-9"
            assert mv["from"].split("/")[0] in ring["allowed_regions"], (ring["jurisdiction"], mv)
        # one node joins six: the ideal is 1/7 of that jurisdiction's keys
        assert ring["ideal_fraction"] == pytest.approx(1 / 7)
        assert 0.9 < ring["ratio_to_ideal"] < 1.1


def test_a_node_outside_a_jurisdiction_moves_none_of_its_keys() -> None:
    data = _rebalance(["--remove", "us-east/hot-0"])
    rings = {r["jurisdiction"]: r for r in data["rings"]}  # type: ignore[attr-defined]
    assert rings["eu"]["affected"] is False and rings["eu"]["moved_fraction"] == 0.0
    assert rings["eu"]["nodes_before"] == rings["eu"]["nodes_after"] == 6
    us = rings["us"]
    assert us["affected"] and us["nodes_before"] == 6 and us["nodes_after"] == 5
    assert {mv["from"] for mv in us["top_moves"]} == {"us-east/hot-0"}
    assert all(mv["to"].split("/")[0] in ("eu-west", "us-east") for mv in us["top_moves"])
    assert us["ideal_fraction"] == pytest.approx(1 / 6)


def test_per_jurisdiction_primary_is_the_routers() -> None:
    """The jurisdiction ring's owner is the primary the Router picks (placement's first allowed node)."""
    import numpy as np

    from geoshard.cluster.routing import Router
    from geoshard.shards import HashRing
    from geoshard.spec import load_spec

    router = Router.from_spec(load_spec(LOCAL_PATH))
    allowed = {"eu-central", "eu-west"}
    sub = HashRing(
        {n: w for n, w in router.ring.weights.items() if router.node_region[n] in allowed},
        vnodes=router.ring.vnodes,
    )
    ids = np.arange(2000)
    owners = sub.owners_batch(ids)
    for uid, idx in zip(ids.tolist(), owners.tolist(), strict=True):
        assert router.route(f"eu:{uid}", "write").replicas[0] == sub.nodes[idx]


def test_removing_a_jurisdictions_last_node_is_refused(tmp_path: Path) -> None:
    text = _edit(LOCAL, "  rules:\n", "  rules:\n    - {jurisdiction: eu, store_in: [eu-west]}\n")
    text = _edit(text, "    replication: 2\n", "    replication: 1\n")
    text = _edit(text, "hot: {nodes: 3,", "hot: {nodes: 1,")  # eu-west, the first region
    _refused(
        ["rebalance", _spec(tmp_path, text), "--remove", "eu-west/hot-0", "--keys", "1000"],
        # examples/local.yaml's own rule keeps EU embeddings in both EU regions
        r"--remove 'eu-west/hot-0' leaves jurisdiction 'eu' \(user_features, "
        r"interactions, sessions\) without a node in eu-west; add a node there first",
    )


# --------------------------------------------------------------------------- terraform generator vs module


@pytest.mark.parametrize(
    ("args", "text", "pattern"),
    [
        (
            ["--project", "Geo_Shard"],
            LOCAL,
            (
                r"--project 'Geo_Shard': the project must be 2-21 characters of lower-case letters, digits "
                r"and '-', starting with a letter \(\^\[a-z\]\[a-z0-9-\]\{1,20\}\$\); e.g. --project geoshard-prod"
            ),
        ),
        (
            ["--project", "geoshard-a-very-long-x"],
            LOCAL,
            (
                r"regions\.eu-central: 'geoshard-a-very-long-x-eu-central' is 33 characters|"
                r"the project must be 2-21 characters"
            ),
        ),
        (
            [],
            LOCAL.replace("name: local", "name: a-long-spec-name-here", 1),
            (
                r"--project \(default geoshard-<spec name>\) 'geoshard-a-long-spec-name-here': the project "
                r"must be 2-21 characters"
            ),
        ),
        (
            [],
            LOCAL.replace("eu-central", "eu-north"),
            (
                r"regions\.eu-north: terraform/examples/global has no provider for region 'eu-north' \(it has "
                r"eu-west, eu-central, us-east, us-west, ap-southeast, ap-northeast\)"
            ),
        ),
    ],
)
def test_terraform_refuses_what_the_module_would_reject(
    tmp_path: Path, args: list[str], text: str, pattern: str
) -> None:
    target = tmp_path / "t.json"
    _refused(
        ["terraform", _spec(tmp_path, text), "--out", str(target), *args],
        r"the Terraform variables would fail the validation of terraform/ .*\n.*" + f"({pattern})",
    )
    assert not target.exists()


def test_load_names_an_unknown_region_before_looking_for_a_deployment(
    tmp_path: Path, repo_root: Path
) -> None:
    _refused(
        [
            "load",
            str(repo_root / "examples" / "local.yaml"),
            "--dir",
            str(tmp_path / "none"),
            "--region",
            "eu-wst",
        ],
        r"--region 'eu-wst' is not a region of 'local'; did you mean 'eu-west'\?",
    )
