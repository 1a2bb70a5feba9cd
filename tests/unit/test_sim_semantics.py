"""Replica semantics of the simulator: reads from the nearest replica, writes ack on WAIT 1."""

from __future__ import annotations

from geoshard.sim.run import simulate_spec
from geoshard.spec import load_spec


def _req(spec, t: str) -> dict:
    result, _ = simulate_spec(spec, seed=3, duration_s=6.0, warmup_s=1.0)
    return result["metrics"]["requests"][t]


def test_reads_stay_in_the_entry_region(repo_root) -> None:
    # pair.yaml: one jurisdiction, two regions ~50 ms apart, replication 2, tiny L1 only:
    # most reads miss and go to the hot tier. Nearest-replica reads never cross regions.
    fr = _req(load_spec(repo_root / "examples/pair.yaml"), "feature_read")
    for region in ("us-east", "us-west"):
        assert fr[region]["p99_ms"] < 25.0, (region, fr[region])


def test_writes_wait_for_the_in_region_replica_only(repo_root) -> None:
    spec = load_spec(repo_root / "examples/pair.yaml")
    regions = {
        r: reg.model_copy(update={"hot": reg.hot.model_copy(update={"replicas": 0})})
        for r, reg in spec.regions.items()
    }
    no_replica = spec.model_copy(update={"regions": regions})
    with_wait = _req(spec, "interaction_write")["all"]
    without = _req(no_replica, "interaction_write")["all"]
    # WAIT 1 adds one intra-region RTT (0.5 ms) + one hot service time (0.2 ms mean)
    assert 0.4 < with_wait["mean_ms"] - without["mean_ms"] < 1.0, (with_wait, without)
