"""``geoshard load`` reads Locust's ``_stats.csv`` into the rows the simulator's verdict
judges: one per request type and region, attainment erring low."""

from __future__ import annotations

from pathlib import Path

from geoshard.cli.load import metrics_from_stats
from geoshard.sim.verdict import judge
from geoshard.spec import load_spec

PCT = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]


def _row(name: str, n: int, failed: int, pcts: list[float]) -> dict[str, str]:
    row = {"Type": "GET", "Name": name, "Request Count": str(n), "Failure Count": str(failed)}
    row.update({c: str(v) for c, v in zip(PCT, pcts, strict=True)})
    return row


def test_rows_per_type_and_region_and_attainment_errs_low() -> None:
    rows = [
        _row("feature_read/eu-west", 1000, 0, [2, 3, 3, 4, 5, 6, 8, 9, 30, 70, 80]),
        _row("recommend/us-east", 100, 10, [20, 25, 30, 35, 50, 90, 120, 150, 200, 200, 200]),
        {"Type": "", "Name": "Aggregated", "Request Count": "1100", "Failure Count": "10"},
    ]
    m = metrics_from_stats(rows, {"feature_read": 60.0, "recommend": 100.0})
    fr = m["feature_read"]["eu-west"]
    assert fr["count"] == 1000 and fr["p99_ms"] == 9.0 and fr["slo_attainment"] == 0.999
    rc = m["recommend"]["us-east"]
    # 95 % of the answered within 100 ms, and 10 of 100 failed: 0.95 x 90 / 100
    assert rc["count"] == 90 and rc["failed"] == 10 and rc["slo_attainment"] == 0.855


def test_the_simulators_verdict_judges_the_rows(repo_root: Path) -> None:
    spec = load_spec(repo_root / "examples" / "local.yaml")
    rows = [_row("recommend/eu-west", 100, 0, [20, 25, 30, 35, 50, 90, 120, 150, 200, 200, 200])]
    metrics = {
        "requests": metrics_from_stats(rows, {"recommend": 100.0}),
        "nodes": {},
        "residency": {"violations": 0, "examples": []},
    }
    v = judge(spec, metrics)
    assert not v["passed"]
    assert any("recommend in eu-west: p99 150 ms > 100 ms" in f["message"] for f in v["failures"])


def test_refused_rows_count_as_misses_and_their_latency_is_kept_apart() -> None:
    from geoshard.cli.load import refusals_from_stats

    rows = [
        _row("feature_read/eu-west", 400, 0, [2, 3, 3, 4, 5, 6, 8, 9, 30, 40, 40]),
        _row("refused:feature_read/eu-west", 600, 600, [1, 1, 1, 1, 2, 2, 3, 4, 7, 9, 9]),
        _row("refused:recommend/us-east", 50, 50, [1, 1, 1, 1, 2, 2, 3, 5, 6, 6, 6]),
    ]
    m = metrics_from_stats(rows, {"feature_read": 60.0, "recommend": 100.0})
    fr = m["feature_read"]["eu-west"]
    # P99 is the admitted requests' own; the 600 refused are failed and missed
    assert fr["count"] == 400 and fr["failed"] == 600 and fr["p99_ms"] == 9.0
    assert fr["slo_attainment"] == 0.4
    rc = m["recommend"]["us-east"]  # every request of the row was refused
    assert rc["count"] == 0 and rc["failed"] == 50 and rc["slo_attainment"] == 0.0
    r = refusals_from_stats(rows)
    assert r["count"] == 650 and r["p99_ms"] == 5.0 and r["max_ms"] == 9.0
    assert r["by_row"] == {"feature_read/eu-west": 600, "recommend/us-east": 50}
    assert refusals_from_stats(rows[:1])["count"] == 0
