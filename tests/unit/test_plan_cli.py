"""``geoshard plan`` end to end: answers, artefacts, exit codes, serial against Ray.

* One pool at 1000 Erlangs with Netflix's tier-0 square-root staffing (beta 2.375): the
  planner's server count is Erlang C's, 1076, waiting with probability 0.0103
  (sim-anchors §3.2).
* A small spec: the plan is written as the input's own text with only the planned values
  changed; the planned spec passes ``geoshard simulate``'s verdict and the spec with its
  binding pool one node smaller fails it (the command the plan prints).
* Nothing in the space meets the SLOs: exit 1, naming the binding constraint.
* The same plan serially and on a local Ray, same seed: the same answer.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from geoshard.cli.app import app
from geoshard.sim.planner import PlanSettings, deterministic_part, plan
from geoshard.sim.search import parse_search
from geoshard.sim.tasks import init_ray
from geoshard.spec import load_spec, parse_spec

runner = CliRunner()

ONE_POOL = {
    "version": 1,
    "name": "erlang",
    "jurisdictions": {"x": {}},
    "regions": {
        "r1": {
            "cloud_region": "r1-1",
            "jurisdiction": "x",
            "location": {"lat": 0, "lon": 0},
            "api": {
                "servers": 1100,
                "workers": 1,
                "service_time": {"dist": "exponential", "mean_ms": 1.0},
            },
            "hot": {
                "nodes": 2,
                "replicas": 0,
                "memory_gb": 1,
                "workers": 1,
                "service_time": {"dist": "constant", "ms": 0.0},
            },
            "warm": {"nodes": 1, "workers": 1, "service_time": {"dist": "constant", "ms": 0.0}},
            "costs": {"api_server_hour": 0.1},
        }
    },
    "network": {"base_ms": 0.0, "intra_region_ms": 0.0, "client_ms": 0.0},
    "shards": {
        "users": {"replication": 1},
        "items": {"attribute": "category", "default_shard": "items-all"},
    },
    "workload": {
        "users": 100000,
        "items": 1000,
        "users_by_jurisdiction": {"x": 1.0},
        "peak_qps": {"r1": 1_000_000},
        "mix": {"feature_read": 1.0},
    },
    "slo": {"latency": {"feature_read": {"p50_ms": 100, "p99_ms": 100}}, "load_ceiling": 1.0},
}


def _plan(args: list[str]) -> tuple[int, dict[str, Any], str]:
    res = runner.invoke(app, ["plan", *args, "--json"])
    assert "Traceback" not in res.stderr, res.stderr
    return res.exit_code, json.loads(res.stdout), res.stderr


def test_one_pool_at_1000_erlangs_gets_erlang_c_s_1076_servers(tmp_path: Path) -> None:
    spec = tmp_path / "erlang.yaml"
    spec.write_text(yaml.safe_dump(ONE_POOL))
    common = [
        str(spec),
        "--search",
        "api.servers=1000..1200",
        "--scenarios",
        "normal",
        "--confirm",
        "0",
        "--workers",
        "1",
    ]
    code, doc, _ = _plan([*common, "--beta", "2.375", "--out", str(tmp_path / "beta")])
    assert code == 0
    api = next(p for p in doc["chosen"]["pools"] if p["pool"] == "api")
    assert api["nodes"] == 1076
    assert api["p_wait"] == pytest.approx(0.0103, abs=5e-5)
    assert api["peak_load"] == pytest.approx(1000 / 1076)
    # without square-root staffing only the load ceiling and its sampling margin bind
    code, doc, _ = _plan([*common, "--out", str(tmp_path / "plain")])
    plain = next(p for p in doc["chosen"]["pools"] if p["pool"] == "api")
    assert code == 0 and 1000 < plain["nodes"] < 1076


@pytest.fixture(scope="module")
def warm_plan(
    repo_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("plan") / "warm"
    code, doc, err = _plan(
        [
            str(repo_root / "examples/validation/plan/warm.yaml"),
            "--search",
            "api.servers=2..8,warm.nodes=1..6",
            "--scenarios",
            "normal",
            "--confirm",
            "1",
            "--replications",
            "1",
            "--duration",
            "20",
            "--workers",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0, err
    return out, doc


def test_the_plan_directory_holds_the_spec_its_diff_and_a_self_contained_report(
    warm_plan: tuple[Path, dict[str, Any]], repo_root: Path
) -> None:
    out, doc = warm_plan
    for name in (
        "plan.json",
        "plan-warm.plan.yaml",
        "plan-warm.plan.diff",
        "candidates.csv",
        "pools.csv",
        "pareto.png",
        "report.html",
    ):
        assert (out / name).is_file(), name
    text = (out / "plan-warm.plan.yaml").read_text()
    original = (repo_root / "examples/validation/plan/warm.yaml").read_text()
    assert text.splitlines()[0] == original.splitlines()[0]  # comments kept
    planned = parse_spec(text)
    sizes = doc["chosen"]["sizing"]["regions"]["r1"]
    assert planned.regions["r1"].warm.nodes == sizes["warm_nodes"] == 2
    diff = (out / "plan-warm.plan.diff").read_text()
    assert "-    api: {servers: 8" in diff and "+    api: {servers: 2" in diff
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "http" not in html.replace("http-equiv", "")
    assert doc["chosen"]["confirmed"] and doc["confirmation"][0]["confirmed"]


def test_the_planned_spec_passes_simulate_and_one_node_fewer_fails(
    warm_plan: tuple[Path, dict[str, Any]],
) -> None:
    _, doc = warm_plan
    st = doc["settings"]
    flags = ["--scale", f"{st['scale']:g}", "--duration", f"{st['duration_s']:g}"]
    planned = next(c for c in doc["commands"] if "as written" in c)
    res = runner.invoke(
        app,
        [
            "simulate",
            shlex.split(planned)[2],
            *flags,
            "--seed",
            "1",
            "--out",
            str(Path(shlex.split(planned)[2]).parent / "run-ok"),
        ],
    )
    assert res.exit_code == 0, res.stdout[-2000:]
    (below,) = [b for b in doc["one_below"] if b["failed"]]
    assert below["pool"] == "r1/warm" and below["one_below"] == 1
    assert below["verified"]  # the planned spec with only this pool one fewer failed too
    cmd = shlex.split(below["command"])
    res = runner.invoke(app, [*cmd[1:], "--out", str(Path(cmd[2]).parent / "run-bad")])
    assert res.exit_code == 1
    assert "r1/warm runs at" in res.stdout


def test_a_space_with_no_answer_exits_1_naming_what_binds(repo_root: Path, tmp_path: Path) -> None:
    code, doc, _ = _plan(
        [
            str(repo_root / "examples/validation/plan/warm.yaml"),
            "--search",
            "warm.nodes=1..1",
            "--scenarios",
            "normal",
            "--confirm",
            "0",
            "--workers",
            "1",
            "--out",
            str(tmp_path / "none"),
        ]
    )
    assert code == 1 and doc["chosen"] is None
    (why,) = set(doc["no_plan_reasons"])
    assert "even at the search's largest warm size (1 x 4 workers)" in why
    assert "r1/warm at 168.0% offered load" in why


def test_serial_and_local_ray_give_the_same_plan(repo_root: Path) -> None:
    ray = pytest.importorskip("ray")
    spec = load_spec(repo_root / "examples/validation/plan/warm.yaml")
    space = parse_search("api.servers=2..4,warm.nodes=1..4,l2.capacity_items=5000|20000", spec)
    settings = PlanSettings(
        scenarios=("normal", "n-1"),
        confirm=1,
        replications=1,
        scale=1.0,
        duration_s=10.0,
        seed=7,
        headroom_levels=2,
    )
    serial = plan(spec, space, settings, workers=1)
    init_ray(None, 2)
    try:
        on_ray = plan(spec, space, settings, workers=2)
    finally:
        ray.shutdown()
    assert serial["executor"]["executor"] == "serial" and on_ray["executor"]["executor"] == "ray"
    assert json.dumps(deterministic_part(serial), sort_keys=True, default=str) == json.dumps(
        deterministic_part(on_ray), sort_keys=True, default=str
    )
    assert len(serial["candidates"]) == 4 and serial["chosen"] is not None
