"""``geoshard chaos`` and ``geoshard load`` against a real deployment. Chaos in short
versions (at most 60 s each): kill-primary, minority-partition, region-outage and
api-crash lose no acknowledged write and break no residency rule, and every run writes
its run directory. Load: Locust in a subprocess, its CSVs and HTML report, and an exit
code that is the simulator's verdict.

One deployment for the module (the ``chaos_deployment`` fixture, tests/fixtures_deploy.py); each scenario heals
what it broke and waits for the deployment to settle before it returns.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from fixtures_deploy import ChaosDeployment, run_cli

from geoshard.cluster.chaos.partition import nft_available

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: the short version: 14 s of load at 60 operations per second, the fault inside
SHORT = ("--duration", "14", "--rate", "60", "--seed", "3", "--region", "eu-west")
BUDGET_S = 60.0


@pytest.mark.parametrize(
    "scenario", ["kill-primary", "minority-partition", "region-outage", "api-crash"]
)
def test_a_scenario_keeps_every_acknowledged_write_and_residency(
    chaos_deployment: ChaosDeployment, tmp_path: Path, scenario: str
) -> None:
    if scenario == "minority-partition" and nft_available() and not os.environ.get("CI"):
        pytest.skip(f"minority-partition needs nftables: {nft_available()}")
    t0 = time.monotonic()
    code, doc, err = chaos_deployment.chaos(scenario, tmp_path / "run", *SHORT)
    wall = time.monotonic() - t0
    assert code == 0, (doc.get("failures"), err[-3000:])
    assert doc["acknowledged_writes_lost"] == 0 and doc["residency_violations"] == 0
    assert doc["unexpected_values"] == 0
    assert isinstance(doc["writes_acknowledged"], int) and doc["writes_acknowledged"] > 100
    assert 0.0 <= float(doc["availability_during_fault"]) <= 1.0  # type: ignore[arg-type]
    assert float(doc["failover_s"]) >= 0.0  # type: ignore[arg-type]
    for name in ("result.json", "timeline.csv", "ledger.csv", "timeline.png", "report.html"):
        assert (tmp_path / "run" / name).is_file(), name
    assert wall < BUDGET_S, f"{scenario} took {wall:.1f} s, over the {BUDGET_S:.0f} s budget"


def test_an_unknown_scenario_exits_2_and_names_the_fix(
    chaos_deployment: ChaosDeployment, tmp_path: Path
) -> None:
    code, doc, err = chaos_deployment.chaos("kill-primry", tmp_path / "run")
    assert code == 2 and "did you mean 'kill-primary'" in err
    assert doc["error"]["exit_code"] == 2  # type: ignore[index]


def test_no_deployment_exits_3(chaos_deployment: ChaosDeployment, tmp_path: Path) -> None:
    other = ChaosDeployment(chaos_deployment.spec, tmp_path / "nothing")
    code, _doc, err = other.chaos("kill-primary", tmp_path / "run")
    assert code == 3 and "no deployment runs" in err


def test_load_runs_locust_headless_and_exits_with_the_verdict(
    chaos_deployment: ChaosDeployment, tmp_path: Path
) -> None:
    res = run_cli(
        "load",
        str(chaos_deployment.spec),
        "--dir",
        str(chaos_deployment.root),
        *("--users", "6", "--rate", "20", "--duration", "6", "--processes", "2"),
        *("--out", str(tmp_path / "load"), "--json"),
        timeout_s=120,
    )
    assert res.returncode in (0, 1), res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert res.returncode == (0 if doc["verdict"]["passed"] else 1)
    assert doc["metrics"]["total_requests"] > 50
    assert {"feature_read", "recommend", "interaction_write"} <= set(doc["metrics"]["requests"])
    for name in ("locust_stats.csv", "report.html", "summary.json"):
        assert (tmp_path / "load" / name).is_file(), name
    over = doc["overload"]
    refused = over["refused"]
    assert refused["count"] == sum(refused["by_row"].values())
    assert over["refused_share"] == round(refused["count"] / doc["metrics"]["total_requests"], 4)
    peak = over["api_rss_mib"]["peak"]
    assert set(peak) == {"eu-central", "eu-west", "us-east"} and min(peak.values()) > 20


def test_the_audit_finds_a_user_id_left_in_another_regions_access_set(
    chaos_deployment: ChaosDeployment,
) -> None:
    """The access set holds key texts (user ids); an EU user's key in us-east's access
    set is a violation the audit must see, read from Redis on every node."""
    from geoshard.cluster.chaos.audit import residency_audit
    from geoshard.cluster.regionlog import RegionLog
    from geoshard.cluster.state import StateDir
    from geoshard.cluster.stores import open_region
    from geoshard.spec import load_spec

    spec = load_spec(chaos_deployment.spec)
    state = StateDir(chaos_deployment.root).read_state()
    stray = "user_features:eu:424242"
    stores = open_region(spec, state, "us-east", caches=False)
    log = RegionLog(stores.hot, "us-east", wait_replicas=0)
    try:
        log.touch({stray: time.time()})
        audit = residency_audit(spec, state)
        assert audit.complete, audit.problems
        assert audit.checked.get("access", 0) > 1  # the region's own keys too
        found = [v for v in audit.violations if stray in v]
        assert found and found[0].startswith("access ") and "in us-east" in found[0], found
    finally:
        log.forget([stray])
        stores.close()
    assert residency_audit(spec, state).violation_count == 0
