"""Full scale and the faithful slice.

* Any valid spec simulates at scale 1, hundreds of pools included; random streams are
  keyed by name, so adding a pool does not change the draws of the others.
* A scaled run keeps per-node load and queueing: on ``examples/validation/slice.yaml``
  (its busiest pool near 90 %) the slice agrees with the scale-1 run per pool within 5 %
  on utilisation and 10 % on mean and P99 queueing delay, and per request type and
  region within 10 % on P99 latency.
* Independent parts of a topology simulate alone, serially or on Ray, with the same
  results.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import yaml

from geoshard.sim.engine import Simulation, stream
from geoshard.sim.parallel import components
from geoshard.sim.run import simulate_spec
from geoshard.spec import load_spec, parse_spec


def _many_regions(n: int) -> str:
    regions = {}
    for i in range(n):
        regions[f"r{i}"] = {
            "cloud_region": f"zz-r{i}-1",
            "jurisdiction": f"j{i % 20}",
            "location": {"lat": -60 + (i * 7) % 120, "lon": -170 + (i * 13) % 340},
            "api": {"servers": 2, "workers": 4},
            "hot": {"nodes": 3, "memory_gb": 1},
            "warm": {"nodes": 1},
        }
    spec = {
        "version": 1,
        "name": "planet",
        "jurisdictions": {f"j{k}": {} for k in range(20)},
        "regions": regions,
        "shards": {
            "users": {"replication": 2, "allow_colocated_replicas": True, "vnodes": 64},
            "items": {"attribute": "category", "default_shard": "items-all"},
        },
        "caches": {
            "l1": {"capacity_items": 100, "ttl_s": 30},
            "l2": {"capacity_items": 2000, "ttl_s": 300},
        },
        "workload": {
            "users": 2_000_000,
            "items": 1000,
            "users_by_jurisdiction": {f"j{k}": 0.05 for k in range(20)},
            "peak_qps": {f"r{i}": 20 for i in range(n)},
            "mix": {"feature_read": 0.5, "recommend": 0.3, "interaction_write": 0.2},
        },
        "slo": {"latency": {"feature_read": {"p50_ms": 50, "p99_ms": 200}}},
    }
    return yaml.safe_dump(spec)


def test_two_hundred_regions_of_pools_simulate_one_second_at_scale_one() -> None:
    spec = parse_spec(_many_regions(200), "planet.yaml")
    result, ts = simulate_spec(spec, seed=1, duration_s=1.0, workers=1)
    nodes = result["metrics"]["nodes"]
    assert len(nodes) == 200 * (1 + 1 + 3)  # API, warm and 3 hot pools per region
    assert result["metrics"]["arrivals"] > 0 and len(ts) == 1
    assert result["metrics"]["residency"]["violations"] == 0
    assert len(components(spec)) == 20  # one part per jurisdiction


def test_streams_are_keyed_by_name_so_a_new_pool_leaves_the_others_alone() -> None:
    a = stream(7, "pool:eu-west/hot-1").random(5)
    assert np.array_equal(a, stream(7, "pool:eu-west/hot-1").random(5))
    assert not np.array_equal(a, stream(7, "pool:eu-west/hot-2").random(5))
    assert not np.array_equal(a, stream(8, "pool:eu-west/hot-1").random(5))


def test_adding_a_region_elsewhere_does_not_change_a_part(repo_root) -> None:
    base = load_spec(repo_root / "examples/local.yaml")
    data = base.model_dump(mode="json")
    data["jurisdictions"]["apac"] = {"description": "a new part"}
    data["regions"]["ap-southeast"] = {
        **data["regions"]["us-east"],
        "cloud_region": "ap-southeast-1",
        "jurisdiction": "apac",
    }
    data["workload"]["users_by_jurisdiction"] = {"eu": 0.6, "us": 0.4, "apac": 0.0}
    data["shards"]["users"]["allow_colocated_replicas"] = True  # apac has one region
    bigger = parse_spec(json.dumps(data))
    eu = {"eu-west", "eu-central", "us-east"}  # local.yaml is one part (US data in eu-west)
    one = Simulation(base, 3, 5.0, regions=eu).run()
    two = Simulation(bigger, 3, 5.0, regions=eu).run()
    assert one.arrived == two.arrived
    assert {k: h.counts for k, h in one.hist.items()} == {k: h.counts for k, h in two.hist.items()}


def _compare(full: dict[str, Any], part: dict[str, Any]) -> list[str]:
    bad = []
    for name, a in full["metrics"]["nodes"].items():
        b = part["metrics"]["nodes"][name]
        if a["utilisation"] >= 0.05 and abs(b["utilisation"] / a["utilisation"] - 1) > 0.05:
            bad.append(f"{name} utilisation {a['utilisation']} vs {b['utilisation']}")
        for k in ("wait_ms", "wait_p99_ms"):
            # queueing of the pools a planner sizes (at least 30 % busy): below that a
            # P99 wait is a few rare coincidences, noise in either run; and a wait of a
            # few tens of microseconds is no queue (10 % or 50 us, the larger)
            if a["utilisation"] >= 0.3 and abs(b[k] - a[k]) > max(0.10 * a[k], 0.05):
                bad.append(f"{name} {k} {a[k]} vs {b[k]}")
    for t, per in full["metrics"]["requests"].items():
        for region, a in per.items():
            b = part["metrics"]["requests"][t][region]
            if abs(b["p99_ms"] / a["p99_ms"] - 1) > 0.10:
                bad.append(f"{t}/{region} p99 {a['p99_ms']} vs {b['p99_ms']}")
    return bad


def test_the_slice_keeps_per_pool_load_queueing_and_latency(repo_root) -> None:
    spec = load_spec(repo_root / "examples/validation/slice.yaml")
    full, _ = simulate_spec(spec, seed=1, duration_s=30.0, workers=1)
    warm = full["metrics"]["nodes"]["r1/warm"]
    assert 0.85 < warm["utilisation"] < 0.95, warm  # the pool near 90 % load
    assert warm["wait_p99_ms"] > 5.0  # real queueing to compare
    # a quarter of the requests over four times as long: as many samples per pool
    part, _ = simulate_spec(spec, seed=1, duration_s=120.0, scale=0.25, workers=1)
    assert part["metrics"]["arrivals"] == pytest.approx(full["metrics"]["arrivals"], rel=0.05)
    assert _compare(full, part) == []


def test_the_slice_comparison_can_fail(repo_root) -> None:
    # the same check catches a scale model that does not keep per-node load: the full
    # run against itself with one pool's service time doubled
    spec = load_spec(repo_root / "examples/validation/slice.yaml")
    full, _ = simulate_spec(spec, seed=1, duration_s=10.0, workers=1)
    data = spec.model_dump(mode="json")
    data["regions"]["r2"]["api"]["service_time"]["mean_ms"] = 2.0
    other, _ = simulate_spec(parse_spec(json.dumps(data)), seed=1, duration_s=10.0, workers=1)
    assert any(b.startswith("r2/api utilisation") for b in _compare(full, other))


def test_parts_give_the_same_results_serially_and_on_ray(repo_root) -> None:
    pytest.importorskip("ray")
    spec = load_spec(repo_root / "examples/validation/slice.yaml")
    assert components(spec) == [["r1", "r2"], ["r3"]]
    serial, _ = simulate_spec(spec, seed=5, duration_s=4.0, workers=1)
    on_ray, _ = simulate_spec(spec, seed=5, duration_s=4.0, workers=2)
    assert serial["machine"]["executor"]["executor"] == "serial"
    assert on_ray["machine"]["executor"]["executor"] == "ray"
    for r in (serial, on_ray):
        r.pop("machine")
    assert json.dumps(serial, sort_keys=True) == json.dumps(on_ray, sort_keys=True)
