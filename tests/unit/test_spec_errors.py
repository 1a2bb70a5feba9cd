"""Broken specs: each exits 2 with a message naming the file, the line, the key and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geoshard.cli import app
from geoshard.errors import SpecError
from geoshard.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
LOCAL = (REPO / "examples" / "local.yaml").read_text()


def _edit(old: str, new: str, count: int = 1) -> str:
    assert old in LOCAL, f"fixture text not found: {old!r}"
    return LOCAL.replace(old, new, count)


# (name, broken YAML, text on the line the message must point at, regex the message must match)
BROKEN = [
    (
        "unknown region in a rule",
        _edit("store_in: [us-east, eu-west]", "store_in: [us-east, eu-wset]"),
        "eu-wset",
        r"residency\.rules\[0\]\.store_in\[1\]: region 'eu-wset' is not in the spec; did you mean 'eu-west'\?",
    ),
    (
        "misspelt key",
        _edit(
            "    jurisdiction: eu\n    location: {lat: 53.35",
            "    jurisdicton: eu\n    location: {lat: 53.35",
        ),
        "jurisdicton",
        r"regions\.eu-west\.jurisdicton: unknown key 'jurisdicton'; did you mean 'jurisdiction'\?",
    ),
    (
        "negative capacity",
        _edit("hot: {nodes: 3,", "hot: {nodes: -2,"),
        "nodes: -2",
        r"regions\.eu-west\.hot\.nodes: must be > 0 \(got -2\)",
    ),
    (
        "empty jurisdiction",
        _edit(
            '  us: {description: "United States"}', '  us: {description: "United States"}\n  uk: {}'
        ),
        "uk: {}",
        r"jurisdictions\.uk: jurisdiction 'uk' has no region",
    ),
    (
        "non-square RTT matrix",
        _edit(
            "  client_ms: 10.0",
            "  client_ms: 10.0\n  matrix: {regions: [eu-west, eu-central, us-east], ms: [[0, 20, 70], [20, 0]]}",
        ),
        "matrix:",
        r"network\.matrix\.ms: the matrix must be square, 3x3 for 3 regions",
    ),
    (
        "replication above allowed regions",
        _edit("    replication: 2\n  items", "    replication: 3\n  items"),
        "replication: 3",
        r"shards\.users\.replication: replication 3 is above the 2 region\(s\) where 'eu' user_features may live",
    ),
    (
        "unknown top-level key",
        _edit("caches:", "cachse:"),
        "cachse:",
        r"cachse: unknown key 'cachse'; did you mean 'caches'\?",
    ),
    (
        "unknown jurisdiction of a region",
        _edit("    jurisdiction: us\n", "    jurisdiction: usa\n"),
        "jurisdiction: usa",
        r"regions\.us-east\.jurisdiction: jurisdiction 'usa' is not in the spec; did you mean 'us'\?",
    ),
    (
        "mix does not sum to 1",
        _edit("interaction_write: 0.2}", "interaction_write: 0.5}"),
        "mix:",
        r"workload\.mix: shares must sum to 1 \(got 1\.3\)",
    ),
    (
        "unknown request type in the mix",
        _edit("recommend: 0.3, interaction_write", "recomend: 0.3, interaction_write"),
        "recomend",
        r"workload\.mix\.recomend: request type 'recomend' is not in the spec; did you mean 'recommend'\?",
    ),
    (
        "unknown policy",
        _edit("policy: sieve", "policy: seive"),
        "seive",
        r"caches\.regional\.policy: .*\(got 'seive'\); did you mean 'sieve'\?",
    ),
    (
        "two capacities on a cache",
        _edit(
            "l1: {policy: lru, capacity_items: 2000,",
            "l1: {policy: lru, capacity_items: 2000, capacity_bytes: 100,",
        ),
        "l1:",
        r"caches\.l1: give exactly one of capacity_items or capacity_bytes",
    ),
    (
        "unknown fault target",
        _edit(
            "  events: []",
            "  events:\n    - {kind: region_outage, target: eu-wst, at_s: 1, duration_s: 5}",
        ),
        "eu-wst",
        r"faults\.events\[0\]\.target: region 'eu-wst' is not in the spec; did you mean 'eu-west'\?",
    ),
    (
        "unknown service-time distribution",
        _edit("dist: exponential, mean_ms: 1.0", "dist: poisson, mean_ms: 1.0"),
        "poisson",
        r"regions\.eu-west\.api\.service_time: unknown dist 'poisson'",
    ),
    (
        "peak qps for an unknown region",
        _edit("peak_qps: {eu-west: 300", "peak_qps: {eu-wets: 300"),
        "eu-wets",
        r"workload\.peak_qps\.eu-wets: region 'eu-wets' is not in the spec; did you mean 'eu-west'\?",
    ),
    (
        "latitude out of range",
        _edit("{lat: 53.35, lon: -6.26}", "{lat: 153.35, lon: -6.26}"),
        "lat: 153.35",
        r"regions\.eu-west\.location\.lat: must be <= 90 \(got 153\.35\)",
    ),
    (
        "stage budgets above 1",
        _edit("stage_budgets: {sourcing: 0.2,", "stage_budgets: {sourcing: 0.7,"),
        "stage_budgets:",
        r"slo\.stage_budgets: fractions must sum to at most 1 \(got 1\.5\)",
    ),
    (
        "p50 above p99",
        _edit("feature_read: {p50_ms: 20, p99_ms: 60}", "feature_read: {p50_ms: 70, p99_ms: 60}"),
        "p50_ms: 70",
        r"slo\.latency\.feature_read: p50_ms \(70\.0\) must not exceed p99_ms \(60\.0\)",
    ),
    (
        "weight for an unknown node",
        _edit(
            "    replication: 2\n  items",
            "    replication: 2\n    weights: {eu-west/hot-9: 2.0}\n  items",
        ),
        "hot-9",
        r"shards\.users\.weights\.eu-west/hot-9: hot node 'eu-west/hot-9' is not in the spec",
    ),
    (
        "not YAML",
        _edit("regions:", "regions: ["),
        "    cloud_region: eu-west-1\n",
        r"the file is not valid YAML: expected .*; fix the syntax",
    ),
    (
        "shared cloud region",
        _edit("cloud_region: eu-central-1", "cloud_region: eu-west-1"),
        "cloud_region: eu-west-1\n    jurisdiction: eu\n    location: {lat: 50",
        r"regions\.eu-central\.cloud_region: 'eu-west-1' is used by region 'eu-west' too",
    ),
]


def _line_of(text: str, marker: str) -> int:
    first = marker.split("\n")[0]
    starts = [i for i in range(len(text)) if text.startswith(marker, i)]
    assert len(starts) == 1, f"marker {marker!r} must occur once"
    del first
    return text.count("\n", 0, starts[0]) + 1


@pytest.mark.parametrize(("name", "text", "marker", "pattern"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_spec_message_names_place_and_fix(
    name: str, text: str, marker: str, pattern: str
) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "bad.yaml")
    msg = str(info.value)
    assert re.search(pattern, msg), msg
    line = _line_of(text, marker)
    assert re.search(rf"bad\.yaml:{line}:", msg), f"expected line {line} in:\n{msg}"


@pytest.mark.parametrize(("name", "text", "marker", "pattern"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_spec_exits_2(
    tmp_path: Path, name: str, text: str, marker: str, pattern: str
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2, result.output
    assert re.search(pattern, result.stderr), result.stderr
    assert result.stdout == ""


def test_at_least_fifteen_broken_specs() -> None:
    assert len(BROKEN) >= 15


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "no such spec file" in result.stderr


@pytest.mark.parametrize("name", ["local", "global", "pair"])
def test_examples_validate(name: str) -> None:
    spec = load_spec(REPO / "examples" / f"{name}.yaml")
    assert spec.name == name
    assert all(spec.jurisdiction_regions(j) for j in spec.jurisdictions)


def test_global_example_is_the_size_the_issue_asks() -> None:
    spec = load_spec(REPO / "examples" / "global.yaml")
    assert len(spec.regions) == 6
    assert set(spec.jurisdictions) == {"eu", "us", "apac"}
    assert spec.workload.users == 2_000_000_000
    assert spec.workload.items == 100_000_000
    assert spec.total_peak_qps() == 1_000_000


def test_schema_command_prints_json_schema() -> None:
    import json

    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "Spec"
    assert "regions" in schema["properties"]
    assert schema["additionalProperties"] is False
