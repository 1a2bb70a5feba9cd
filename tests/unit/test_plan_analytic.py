"""The planner's analytic model: the real ring and router, and agreement with the simulator.

* Each hot node's keys come from the real ring: the planner's fast path (the first of a
  region's own nodes clockwise; the second when a jurisdiction is down to one region;
  the next when a node is down) gives the router's replicas key by key.
* Entry regions under a region loss are the router's (residency-constrained failover).
* On a small spec with caches, a loaded hot tier and reads and writes, the model agrees
  with a full-scale simulation: P99 wait per pool and P99 latency per request type
  within 10 %, cache hit ratios within 1 point (docs/planning.md has the full table).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoshard.cluster.routing import Health, Router
from geoshard.shards import hash_keys
from geoshard.sim.analytic import AnalyticModel, Sizing
from geoshard.sim.modelcheck import compare
from geoshard.sim.ringload import RegionRing
from geoshard.sim.scenarios import Scenario, plan_scenarios, scenario_spec
from geoshard.spec import Spec, load_spec


@pytest.fixture(scope="module")
def global_spec(repo_root: Path) -> Spec:
    return load_spec(repo_root / "examples/global.yaml")


@pytest.fixture(scope="module")
def router(global_spec: Spec) -> Router:
    return Router.from_spec(global_spec)


def _ids(spec: Spec, n: int = 5000) -> np.ndarray:
    # eu users: ids from 0 (eu is the first jurisdiction alphabetically after apac)
    model = AnalyticModel.__new__(AnalyticModel)
    del model
    rng = np.random.default_rng(3)
    from geoshard.sim.engine import populations

    pop = populations(spec, 1.0, 1)["eu"]
    return pop.user_of_rank(rng.integers(0, pop.n, n))


def test_reads_and_writes_land_where_the_router_sends_them(
    global_spec: Spec, router: Router
) -> None:
    ids = _ids(global_spec)
    hashes = hash_keys(ids)
    west = RegionRing.of("eu-west", 48, {}, 3072)
    central = RegionRing.of("eu-central", 48, {}, 3072)
    codes, routes = router.route_codes("eu", ids, "read", near="eu-west")
    assert [routes[c][0][0] for c in codes.tolist()] == west.first_nodes(hashes)
    codes, routes = router.route_codes("eu", ids, "write", data_class="interactions")
    expected = [
        {a, b} for a, b in zip(west.first_nodes(hashes), central.first_nodes(hashes), strict=True)
    ]
    assert [set(routes[c][0]) for c in codes.tolist()] == expected


def test_with_a_region_lost_both_copies_are_the_first_two_nodes_of_the_other(
    global_spec: Spec, router: Router
) -> None:
    ids = _ids(global_spec)
    hashes = hash_keys(ids)
    west = RegionRing.of("eu-west", 48, {}, 3072)
    down = Health(down_regions=frozenset({"eu-central"}))
    codes, routes = router.route_codes("eu", ids, "write", down, "interactions")
    got = [routes[c][0] for c in codes.tolist()]
    assert got == list(zip(west.first_nodes(hashes), west.second_nodes(hashes), strict=True))
    # and the second copies' shares are exact: each node's share of keys it is second for
    shares = west.second_shares
    assert sum(shares.values()) == pytest.approx(1.0)
    counts = dict.fromkeys(shares, 0)
    for n in west.second_nodes(hash_keys(np.arange(200_000))):
        counts[n] += 1
    worst = max(abs(counts[n] / 200_000 - shares[n]) for n in shares)
    assert worst < 0.003


def test_a_down_node_s_keys_go_to_the_next_node_as_the_router_says(
    global_spec: Spec, router: Router
) -> None:
    ids = _ids(global_spec)
    west = RegionRing.of("eu-west", 48, {}, 3072)
    health = Health(down_nodes=frozenset({"eu-west/hot-7"}))
    codes, routes = router.route_codes("eu", ids, "read", health, near="eu-west")
    assert [routes[c][0][0] for c in codes.tolist()] == west.first_nodes(
        hash_keys(ids), without="eu-west/hot-7"
    )
    after = west.shares_without("eu-west/hot-7")
    assert "eu-west/hot-7" not in after and sum(after.values()) == pytest.approx(1.0)


def test_a_lost_region_s_clients_enter_the_nearest_region_residency_allows(
    global_spec: Spec,
) -> None:
    model = AnalyticModel(global_spec)
    scenarios, notes = plan_scenarios(global_spec, ["region-loss"], model.router)
    assert [s.name for s in scenarios] == [
        "region-loss eu-west+us-east+ap-southeast",
        "region-loss eu-central+us-west+ap-northeast",
    ]
    assert notes == []
    tr = model.traffic(scenarios[0])
    assert tr.entry[("eu-west", 0)] == "eu-central"
    assert tr.entry[("us-east", 1)] == "us-west"
    assert tr.api["eu-west"] == 0.0
    # eu-central serves all EU traffic: both regions' clients, recommends twice
    qps = global_spec.workload.peak_qps
    mix = global_spec.workload.mix
    eu = (qps["eu-west"] + qps["eu-central"]) / 1000.0
    visits = eu * (mix["feature_read"] + 2 * mix["recommend"] + mix["interaction_write"])
    assert tr.api["eu-central"] == pytest.approx(visits)


def test_the_simulator_runs_a_scenario_as_the_model_sees_it(global_spec: Spec) -> None:
    loss = Scenario("region-loss eu-west", "region-loss", down_regions=frozenset({"eu-west"}))
    spec = scenario_spec(global_spec, loss, 30.0)
    (fault,) = spec.faults.events
    assert (fault.kind, fault.target, fault.at_s, fault.duration_s) == (
        "region_outage",
        "eu-west",
        0.0,
        30.0,
    )
    assert spec.faults.detection_delay_s == 0.0
    n1 = scenario_spec(
        global_spec, Scenario("n-1", "n-1", minus_one=True), 30.0, {"eu-west": "eu-west/hot-5"}
    )
    assert n1.regions["eu-west"].api.servers == global_spec.regions["eu-west"].api.servers - 1
    assert [f.target for f in n1.faults.events] == ["eu-west/hot-5"]


def test_hot_memory_is_the_fullest_node_s_share_of_the_users(global_spec: Spec) -> None:
    model = AnalyticModel(global_spec)
    sizing = Sizing.of(global_spec)
    gib = model.hot_memory(sizing, ["eu-west"])["eu-west"]
    ring = RegionRing.of("eu-west", 48, {}, 3072)
    users = global_spec.workload.users * global_spec.workload.users_by_jurisdiction["eu"]
    top = max(ring.shares.values()) * users * global_spec.workload.value_bytes / 2**30
    assert gib == pytest.approx(top, rel=0.01)


def test_the_model_agrees_with_the_simulator_on_a_small_spec(repo_root: Path) -> None:
    spec = load_spec(repo_root / "examples/validation/plan/hot.yaml")
    rows = compare(spec, duration_s=60.0, warmup_s=20.0)
    judged = [r for r in rows if r.what in ("pool", "latency", "cache")]
    assert {r.what for r in judged} == {"pool", "latency", "cache"}
    hot = next(r for r in rows if r.what == "pool" and r.name == "r1/hot")
    assert hot.sim > 1.0 and hot.tolerance == 0.10  # a loaded hot tier, judged
    assert [
        f"{r.what} {r.name}: model {r.model:.4g} sim {r.sim:.4g}" for r in judged if not r.ok
    ] == []
