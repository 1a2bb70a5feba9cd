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
    _refused(["validate", str(path)],
             r"latin1\.yaml:\d+: the spec is not UTF-8 text \(byte 0xe9 at line \d+, column \d+\); "
             r"save the file as UTF-8")


def test_a_directory_as_spec(tmp_path: Path) -> None:
    _refused(["route", str(tmp_path), "--user", "eu:1"],
             r"is a directory, not a spec file; give a YAML file")


def test_unreadable_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tests run as root in CI, where chmod 000 does not stop a read: refuse the open instead
    path = Path(_spec(tmp_path, LOCAL))
    real_open = Path.open

    def guarded(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

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
    _refused(["validate", _spec(tmp_path, _laughs(10))],
             r"spec\.yaml:\d+: the document expands to more than 200000 values through YAML "
             r"aliases .*use fewer aliases")
    assert time.perf_counter() - t0 < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_an_alias_cycle_is_refused(tmp_path: Path) -> None:
    _refused(["validate", _spec(tmp_path, "a: &a [1, *a]\n")], r"alias refers to a value that contains it")


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
    _refused(["validate", _spec(tmp_path, text)],
             rf"spec\.yaml:{first + 1}: caches: duplicate key 'caches' \(first at line {first}\); "
             r"keep one of them")


def test_duplicate_nested_key(tmp_path: Path) -> None:
    text = _edit(LOCAL, "hot: {nodes: 3,", "hot: {nodes: 3, nodes: 5,")
    _refused(["validate", _spec(tmp_path, text)],
             r"regions\.eu-west\.hot\.nodes: duplicate key 'nodes' \(first at line \d+\)")


@pytest.mark.parametrize(("old", "new", "path"), [
    ("hot: {nodes: 3,", "hot: {nodes: true,", r"regions\.eu-west\.hot\.nodes"),
    ("users: 100000\n", "users: yes\n", r"workload\.users"),
    ("eu-west: 300", "eu-west: false", r"workload\.peak_qps\.eu-west"),
])
def test_booleans_are_not_numbers(tmp_path: Path, old: str, new: str, path: str) -> None:
    _refused(["validate", _spec(tmp_path, _edit(LOCAL, old, new))],
             rf"spec\.yaml:\d+: {path}: (true|false) is not a number; write a number")


def test_text_is_not_a_number_but_yaml11_exponents_are(tmp_path: Path) -> None:
    _refused(["validate", _spec(tmp_path, _edit(LOCAL, "users: 100000\n", "users: lots\n"))],
             r"workload\.users: 'lots' is not a number; write a number")
    # PyYAML reads 1e5 as text; it is still the number a reader sees
    res = _invoke(["validate", _spec(tmp_path, _edit(LOCAL, "users: 100000\n", "users: 1e5\n")), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["totals"]["users"] == 100000


# --------------------------------------------------------------------------- spec bounds

@pytest.mark.parametrize(("old", "new", "pattern"), [
    ("users: 100000\n", "users: 100000000000000000000\n",
     r"workload\.users: must be <= 9223372036854775807 \(got 100000000000000000000\)"),
    ("eu-west: 300", "eu-west: 1.0e+308", r"workload\.peak_qps\.eu-west: must be <= 1000000000"),
    ("eu-west: 300", "eu-west: .inf", r"workload\.peak_qps\.eu-west: must be a finite number"),
    ("eu-west: 300", "eu-west: .nan", r"workload\.peak_qps\.eu-west: must be a finite number"),
    ("dist: exponential, mean_ms: 1.0", "dist: exponential, mean_ms: 1.0e+300",
     r"regions\.eu-west\.api\.service_time\.mean_ms: must be <= 86400000"),
    ("hot: {nodes: 3,", "hot: {nodes: 20000,", r"regions\.eu-west\.hot\.nodes: must be <= 10000"),
    ("fiber_km_per_ms: 200.0", "fiber_km_per_ms: 1.0e-300",
     r"network\.fiber_km_per_ms: must be >= 1"),
])
def test_numbers_beyond_what_the_code_can_run_are_refused(tmp_path: Path, old: str, new: str,
                                                         pattern: str) -> None:
    _refused(["validate", _spec(tmp_path, _edit(LOCAL, old, new))], pattern)


def test_thousands_of_hot_nodes_are_refused_with_the_vnodes_that_fit(tmp_path: Path) -> None:
    text = GLOBAL.replace("hot: {nodes: 48,", "hot: {nodes: 3000,")
    res = _refused(["route", _spec(tmp_path, text), "--user", "eu:1"],
                   r"shards\.users: the user ring would hold 55296000 points .*at most 4194304 "
                   r".*set shards\.users\.vnodes to 233 or less")
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

    text = _edit(LOCAL, "    replication: 2\n  items",
                 "    replication: 2\n    vnodes: 100\n    weights: {eu-west/hot-0: 2.5}\n  items")
    spec = parse_spec(text)
    assert ring_points(spec) == Router.from_spec(spec).ring.point_count
