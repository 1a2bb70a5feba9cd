"""Faults and overload in the simulator: node crash, partition, latency spike, spill, shed.

Each test runs ``examples/pair.yaml`` (one jurisdiction, us-east and us-west ~50 ms apart,
replication 2) with one change and checks what the change must do, against the same run
without it where a difference is the claim.
"""

from __future__ import annotations

from typing import Any

import pytest

from geoshard.sim.run import simulate_spec
from geoshard.spec import Fault, Faults, Spec, load_spec

DETECT_S = 2.0


@pytest.fixture(scope="module")
def pair(repo_root) -> Spec:
    return load_spec(repo_root / "examples/pair.yaml")


def _faulted(spec: Spec, **event: Any) -> Spec:
    return spec.model_copy(
        update={"faults": Faults(detection_delay_s=DETECT_S, events=[Fault(**event)])}
    )


def _api(spec: Spec, region: str, servers: int, workers: int) -> Spec:
    regions = dict(spec.regions)
    reg = regions[region]
    regions[region] = reg.model_copy(
        update={"api": reg.api.model_copy(update={"servers": servers, "workers": workers})}
    )
    return spec.model_copy(update={"regions": regions})


def _run(spec: Spec, duration_s: float = 12.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return simulate_spec(spec, seed=3, duration_s=duration_s, warmup_s=0.0)


def _errors_by_second(ts: list[dict[str, Any]]) -> dict[int, int]:
    return {int(row["t_s"]): int(row["errors"]) for row in ts}


def test_a_crashed_node_fails_requests_only_until_the_router_notices(pair) -> None:
    result, ts = _run(
        _faulted(pair, kind="node_crash", target="us-east/hot-1", at_s=3, duration_s=6)
    )
    err = _errors_by_second(ts)
    # the node dies at 3 s; the router sees it at 5 s and fails over to the replica in
    # us-west; the node is back at 9 s (the router learns it at 11 s, no errors then)
    assert sum(err[s] for s in (3, 4)) > 100, err
    assert all(err[s] == 0 for s in err if s not in (2, 3, 4)), err
    counts = result["metrics"]["counts"]
    assert counts["failed"] == counts["stale_route_errors"] > 0
    nodes = result["metrics"]["nodes"]
    peers = [nodes[f"us-east/hot-{i}"]["requests"] for i in (0, 2, 3)]
    # hot-1 is out for 8 of the 12 s (6 down + 2 until the router learns the recovery)
    assert nodes["us-east/hot-1"]["requests"] < 0.5 * min(peers), (nodes, peers)
    assert result["metrics"]["residency"]["violations"] == 0


def test_a_partition_fails_cross_region_writes_until_detected_and_never_reads(pair) -> None:
    result, ts = _run(
        _faulted(pair, kind="partition", between=["us-east", "us-west"], at_s=3, duration_s=6)
    )
    req = result["metrics"]["requests"]
    # reads go to the replica in the entry region: the cut never reaches them
    assert req["feature_read"]["all"]["failed"] == 0
    assert req["recommend"]["all"]["failed"] == 0
    # writes whose ring primary is across the cut time out until the router notices
    assert req["interaction_write"]["all"]["failed"] > 0
    err = _errors_by_second(ts)
    assert all(err[s] == 0 for s in err if s not in (2, 3, 4)), err
    base, _ = _run(pair)
    # once known, the write goes to the primary's replica on this side: in-region, faster
    assert (
        req["interaction_write"]["all"]["p50_ms"]
        < base["metrics"]["requests"]["interaction_write"]["all"]["p50_ms"]
    )


def test_a_latency_spike_adds_its_delay_to_every_hop_touching_the_region(pair) -> None:
    extra = 40.0
    spiked, _ = _run(
        _faulted(
            pair, kind="latency_spike", target="us-west", at_s=0, duration_s=12, extra_ms=extra
        )
    )
    base, _ = _run(pair)
    s = spiked["metrics"]["requests"]["feature_read"]
    b = base["metrics"]["requests"]["feature_read"]
    # a feature read in us-west crosses two hops that touch us-west: the client's and
    # the one to the hot node in the region; us-east's reads touch neither
    assert s["us-west"]["p50_ms"] - b["us-west"]["p50_ms"] == pytest.approx(2 * extra, abs=2.0)
    assert s["us-east"]["p50_ms"] == pytest.approx(b["us-east"]["p50_ms"], abs=0.5)
    assert spiked["metrics"]["counts"]["failed"] == 0


def test_an_overloaded_region_spills_to_the_other_allowed_region(pair) -> None:
    # us-east: one worker (1 ms mean service) for 1,500 requests/s; us-west has room
    result, _ = _run(_api(pair, "us-east", 1, 1), duration_s=10.0)
    m = result["metrics"]
    assert m["counts"]["spilled"] > 1000 and m["counts"]["shed"] == 0
    assert m["entry_regions"]["us-east"]["us-west"] == m["counts"]["spilled"]
    assert m["nodes"]["us-east/api"]["utilisation"] <= 1.0
    assert m["nodes"]["us-west/api"]["utilisation"] < 0.5


def test_overload_everywhere_sheds_and_offered_load_goes_past_utilisation(pair) -> None:
    spec = _api(_api(pair, "us-east", 1, 1), "us-west", 1, 1)
    result, _ = _run(spec, duration_s=10.0)
    m = result["metrics"]
    assert m["counts"]["shed"] > 0
    for region in ("us-east", "us-west"):
        node = m["nodes"][f"{region}/api"]
        # the server is busy all the time, and asked for more than the window holds
        assert 0.95 < node["utilisation"] <= 1.0, node
        assert node["offered_load"] > 1.1, node
