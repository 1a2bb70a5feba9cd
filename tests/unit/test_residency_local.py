"""The ``user_embeddings`` rule of ``examples/local.yaml``, end to end (issue 11, part 1).

EU embeddings may be stored in eu-west and eu-central but processed only in eu-west. A
recommend touches ``user_features`` and ``user_embeddings``, so an EU recommend must
enter eu-west, even from eu-central, and fail with the residency reason when eu-west is
down; before the rule was honoured, the simulator entered recommends where only the
features could be processed and reported over 1,000 violations in 20 s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from geoshard.cli import app
from geoshard.sim.engine import EngineOptions
from geoshard.sim.run import simulate_spec
from geoshard.spec import Fault, Faults, load_spec

REPO = Path(__file__).resolve().parents[2]
LOCAL = str(REPO / "examples" / "local.yaml")
RULE = {
    "jurisdiction": "eu",
    "data_classes": ["user_embeddings"],
    "store_in": ["eu-west", "eu-central"],
    "process_in": ["eu-west"],
}
runner = CliRunner()


def test_local_yaml_has_the_rule_and_validates() -> None:
    rules = [r.model_dump(exclude_none=True) for r in load_spec(LOCAL).residency.rules]
    assert RULE in rules
    res = runner.invoke(app, ["validate", LOCAL])
    assert res.exit_code == 0, res.stderr
    assert "user_embeddings" in res.stdout


def test_route_user_embeddings_enters_where_they_may_be_processed() -> None:
    base = ["route", LOCAL, "--user", "eu:42", "--data-class", "user_embeddings"]
    res = runner.invoke(app, [*base, "--from", "eu-central", "--json"])
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["entry_region"] == "eu-west"
    assert data["allowed_regions"] == ["eu-central", "eu-west"]  # where they may be stored
    assert {r["region"] for r in data["replicas"]} <= {"eu-central", "eu-west"}
    res = runner.invoke(app, [*base, "--from", "eu-central", "--down", "eu-west"])
    assert res.exit_code == 1
    assert "no healthy region may process eu user_embeddings" in res.stderr


def test_simulate_enters_eu_recommends_at_eu_west_with_no_violation(tmp_path) -> None:
    res = runner.invoke(
        app, ["simulate", LOCAL, "--duration", "20", "--out", str(tmp_path), "--json"]
    )
    assert res.exit_code in (0, 1), res.stderr
    m = json.loads(res.stdout)["metrics"]
    assert m["residency"]["violations"] == 0 and m["residency"]["checks"] > 10_000
    req = m["requests"]
    # eu-central's recommends (and only they) enter eu-west; its reads and writes stay
    entries = m["entry_regions"]["eu-central"]
    assert entries["eu-west"] == req["recommend"]["eu-central"]["count"] > 0
    assert entries["eu-central"] == (
        req["feature_read"]["eu-central"]["count"] + req["interaction_write"]["eu-central"]["count"]
    )
    assert m["counts"]["no_allowed_region"] == 0


def test_with_eu_west_down_eu_recommends_fail_with_the_reason() -> None:
    spec = load_spec(LOCAL)
    spec = spec.model_copy(
        update={
            "faults": Faults(
                detection_delay_s=0,
                events=[Fault(kind="region_outage", target="eu-west", at_s=0, duration_s=100)],
            )
        }
    )
    result, _ = simulate_spec(
        spec, seed=5, duration_s=5, warmup_s=0, options=EngineOptions(warm_start=False)
    )
    m: dict[str, Any] = result["metrics"]
    assert m["residency"]["violations"] == 0
    rec = m["requests"]["recommend"]
    assert rec["eu-west"]["count"] == rec["eu-central"]["count"] == 0
    eu_failed = rec["eu-west"]["failed"] + rec["eu-central"]["failed"]
    assert eu_failed > 0 and m["counts"]["no_allowed_region"] == eu_failed
    # EU reads are served in eu-central; US recommends are untouched
    assert m["requests"]["feature_read"]["eu-central"]["failed"] == 0
    assert rec["us-east"]["failed"] == 0 and rec["us-east"]["count"] > 0
