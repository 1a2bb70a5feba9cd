"""The chaos checker's pure parts: the ledger and set checker, the timeline statistics,
and the parsing of stored key names the residency audit relies on."""

from __future__ import annotations

import threading

import pytest

from geoshard.cluster.chaos.audit import AuditReport, ReadBack, parse_stored_key
from geoshard.cluster.chaos.ledger import Ledger, check_set
from geoshard.cluster.chaos.timeline import Sample, buckets, failover_s, percentile, phase_stats
from geoshard.keys import DataKey, UserKey
from geoshard.regions.residency import ResidencyPolicy


def _ledger(*ops: tuple[str, str, str, str]) -> Ledger:
    """(key, token, outcome, region) per write."""
    led = Ledger()
    for i, (key, tok, outcome, region) in enumerate(ops):
        op = led.invoke("feature", key, tok, t_s=float(i))
        led.complete(op, outcome, region=region, t_s=i + 0.1)  # type: ignore[arg-type]
    return led


def test_an_acknowledged_write_not_found_is_lost() -> None:
    led = _ledger(("k1", "a", "ok", "eu-west"), ("k2", "b", "ok", "eu-west"))
    rep = check_set(led.writes(), {"k1": {"a"}})
    assert rep.lost == [("k2", "b", "eu-west")] and not rep.passed


def test_indeterminate_writes_may_or_may_not_survive() -> None:
    led = _ledger(("k1", "a", "info", ""), ("k2", "b", "info", ""))
    rep = check_set(led.writes(), {"k1": {"a"}})
    assert rep.passed and rep.indeterminate == 2 and rep.recovered == 1


def test_a_value_never_written_or_refused_fails_the_check() -> None:
    led = _ledger(("k1", "a", "ok", "r"), ("k2", "b", "fail", ""))
    rep = check_set(led.writes(), {"k1": {"a", "zzz"}, "k2": {"b"}})
    assert rep.unexpected == [("k1", "zzz")]
    assert rep.resurrected == [("k2", "b")]
    assert not rep.passed


def test_pending_writes_count_as_indeterminate() -> None:
    led = Ledger()
    led.invoke("feature", "k", "t", t_s=0.0)
    rep = check_set(led.writes(), {})
    assert rep.passed and rep.indeterminate == 1


def test_complete_refuses_an_ok_without_region_and_pending() -> None:
    led = Ledger()
    op = led.invoke("feature", "k", "t", t_s=0.0)
    with pytest.raises(ValueError, match="without the region"):
        led.complete(op, "ok", t_s=1.0)
    with pytest.raises(ValueError, match="not pending"):
        led.complete(op, "pending", t_s=1.0)


def test_the_ledger_is_safe_across_threads() -> None:
    led = Ledger()
    barrier = threading.Barrier(4)

    def work(n: int) -> None:
        barrier.wait(timeout=5)
        for i in range(500):
            op = led.invoke("feature", f"k{n}-{i}", "t", t_s=0.0)
            led.complete(op, "ok", region="r", t_s=0.0)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    ws = led.writes()
    assert len(ws) == 2000 and sorted(w.op_id for w in ws) == list(range(2000))


def test_read_back_requires_the_acknowledging_region() -> None:
    led = _ledger(("k1", "a", "ok", "eu-west"), ("k2", "b", "info", ""))
    rb = ReadBack(tokens={"k1": {"eu-central": "a"}, "k2": {"eu-central": "b"}})
    found = rb.found_for(led.writes())
    assert found == {"k1": set(), "k2": {"b"}}
    assert check_set(led.writes(), found).lost == [("k1", "a", "eu-west")]


def test_percentile_phases_and_failover() -> None:
    assert percentile([], 0.99) is None
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    samples = [Sample(t / 10, "feature_read", 200, 2.0) for t in range(100)]
    samples += [Sample(3.0 + t / 10, "feature_write", 0, 500.0) for t in range(20)]
    ph = phase_stats(samples, fault_at_s=3.0, heal_at_s=7.0)
    assert ph["before"]["availability"] == 1.0
    assert ph["during"]["requests"] == 60 and ph["during"]["availability"] == pytest.approx(
        40 / 60, abs=1e-3
    )
    assert ph["during"]["errors_by_status"] == {"no_answer": 20}
    fo, recovered = failover_s(samples, fault_at_s=3.0, heal_at_s=7.0)
    assert recovered and fo == pytest.approx(1.9 + 0.5)
    assert failover_s(samples[:10], fault_at_s=3.0, heal_at_s=7.0) == (0.0, True)
    late = [*samples, Sample(6.5, "feature_write", 503, 1.0)]
    assert failover_s(late, fault_at_s=3.0, heal_at_s=7.0) == (4.0, False)
    rows = buckets(samples)
    assert len(rows) == 10 and rows[3]["errors_per_s"] == 10.0 and rows[0]["p99_ms"] == 2.0
    with pytest.raises(ValueError, match="heal_at_s"):
        phase_stats(samples, fault_at_s=3.0, heal_at_s=1.0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("{eu:4}:user_features:eu:4", "user_features:eu:4"),
        ("l2:{us:9}:sessions:us:9", "sessions:us:9"),
        ("{gs:eu-west}:log", None),
        ("{sku-1}:item_catalog:sku-1", None),
        ("plain", None),
        ("{eu:x}:user_features:eu:x", None),
    ],
)
def test_parse_stored_key(name: str, expected: str | None) -> None:
    key = parse_stored_key(name)
    assert (str(key) if key is not None else None) == expected


def test_the_audit_counts_a_datum_outside_its_regions(repo_root: object) -> None:
    from pathlib import Path

    from geoshard.spec import load_spec

    spec = load_spec(Path(str(repo_root)) / "examples" / "local.yaml")
    policy = ResidencyPolicy.from_spec(spec)
    rep = AuditReport()
    rep.add("hot", "eu-west", DataKey("user_features", UserKey("eu", 1)), policy, "n1")
    rep.add("hot", "us-east", DataKey("user_features", UserKey("eu", 1)), policy, "n2")
    rep.add("cache", "eu-west", DataKey("user_features", UserKey("us", 1)), policy, "n3")
    assert rep.checked == {"hot": 2, "cache": 1}
    assert rep.violation_count == 1 and "us-east" in rep.violations[0]
