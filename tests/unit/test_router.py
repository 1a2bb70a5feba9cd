"""The Router: residency-bounded, distinct-region, deterministic routes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from geoshard.cli import app
from geoshard.cluster.routing import Health, Router
from geoshard.errors import ConfigError, InputError, NoHealthyReplicaError
from geoshard.keys import UserKey
from geoshard.spec import PERSONAL_CLASSES, Spec, load_spec

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- random topologies
def _spec(regions: dict[str, tuple[str, int]], rules: list[dict[str, Any]], rf: int) -> Spec:
    """A minimal valid spec: region -> (jurisdiction, hot nodes)."""
    jur = sorted({j for j, _ in regions.values()})
    doc = {
        "name": "prop",
        "jurisdictions": {j: {} for j in jur},
        "regions": {
            r: {
                "cloud_region": f"c-{r}",
                "jurisdiction": j,
                "location": {"lat": (i * 17) % 80, "lon": (i * 53) % 170},
                "api": {"servers": 1},
                "hot": {"nodes": n, "memory_gb": 1},
                "warm": {"nodes": 1},
            }
            for i, (r, (j, n)) in enumerate(sorted(regions.items()))
        },
        "residency": {"rules": rules},
        "shards": {
            "users": {"replication": rf, "allow_colocated_replicas": True, "vnodes": 64},
            "items": {"attribute": "category", "default_shard": "items"},
        },
        "workload": {
            "users": 1000,
            "items": 100,
            "users_by_jurisdiction": {j: 1 / len(jur) for j in jur},
            "peak_qps": dict.fromkeys(regions, 1),
            "mix": {"feature_read": 1.0},
        },
        "slo": {"latency": {"feature_read": {"p50_ms": 1, "p99_ms": 2}}},
    }
    return Spec.model_validate(doc)


@st.composite
def topologies(draw: st.DrawFn) -> tuple[Spec, Health, str, int, str]:
    n_regions = draw(st.integers(2, 6))
    jurs = ["j" + str(i) for i in range(draw(st.integers(1, min(3, n_regions))))]
    regions: dict[str, tuple[str, int]] = {}
    for i in range(n_regions):
        # every jurisdiction gets at least one region
        j = jurs[i] if i < len(jurs) else draw(st.sampled_from(jurs))
        regions[f"r{i}"] = (j, draw(st.integers(1, 4)))
    rules = []
    if draw(st.booleans()):
        j = draw(st.sampled_from(jurs))
        store = draw(
            st.lists(st.sampled_from(sorted(regions)), min_size=1, max_size=3, unique=True)
        )
        classes = draw(
            st.lists(st.sampled_from(PERSONAL_CLASSES), min_size=1, max_size=4, unique=True)
        )
        rules.append({"jurisdiction": j, "data_classes": classes, "store_in": store})
    # the spec refuses a replication factor above the allowed hot nodes: stay within it
    probe = Router(_spec(regions, rules, 1))
    max_rf = min(
        sum(
            1
            for r in probe.node_region.values()
            if r in probe.residency.allowed_regions(j, dc, "store")
        )
        for j in jurs
        for dc in PERSONAL_CLASSES
    )
    spec = _spec(regions, rules, draw(st.integers(1, max(1, min(4, max_rf)))))
    nodes = sorted(spec.hot_nodes())
    down = draw(st.lists(st.sampled_from(nodes + sorted(regions)), max_size=6, unique=True))
    return (
        spec,
        Health.of(down),
        draw(st.sampled_from(jurs)),
        draw(st.integers(0, 2**63 - 1)),
        draw(st.sampled_from(PERSONAL_CLASSES)),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies())
def test_router_never_leaves_allowed_regions(case: tuple[Spec, Health, str, int, str]) -> None:
    spec, health, jur, uid, dc = case
    router = Router(spec)
    allowed = router.residency.allowed_regions(jur, dc, "store")
    healthy = [n for n, r in router.node_region.items() if r in allowed and health.is_up(n, r)]
    key = UserKey(jur, uid)
    if not healthy:
        with pytest.raises(NoHealthyReplicaError, match="does not leave the jurisdiction"):
            router.route(key, "write", health, dc)
        with pytest.raises(NoHealthyReplicaError, match="does not leave the jurisdiction"):
            router.replicas_batch(jur, [uid], "write", health, dc)
        return
    route = router.route(key, "write", health, dc)
    assert route.replicas, "a healthy allowed node exists, so a route must exist"
    assert all(router.node_region[n] in allowed for n in route.replicas)
    assert all(health.is_up(n, router.node_region[n]) for n in route.replicas)
    assert len(set(route.replicas)) == len(route.replicas)
    assert len(route.replicas) == min(router.replication, len(healthy))
    # distinct regions whenever enough exist
    live_regions = {router.node_region[n] for n in healthy}
    want = min(router.replication, len(live_regions))
    assert len(set(route.regions[:want])) == want
    # a read near any region: the same replicas, nearest first, still only allowed regions
    rtt = router.network.rtt_ms
    for near in sorted(spec.regions):
        read = router.route(key, "read", health, dc, near=near)
        assert sorted(read.replicas) == sorted(route.replicas)
        assert all(router.node_region[n] in allowed for n in read.replicas)
        assert all(health.is_up(n, router.node_region[n]) for n in read.replicas)
        d = [rtt(near, r) for r in read.regions]
        assert d == sorted(d)
        assert rtt(near, read.regions[0]) == min(rtt(near, r) for r in route.regions)
    # a write ignores near: primary first, ring order
    assert router.route(key, "write", health, dc, near=max(spec.regions)).replicas == route.replicas
    # the vectorised form gives the very same answers, key by key
    ids = [uid, uid // 2, uid // 3, 7, 0]
    cases: list[tuple[Literal["read", "write"], str | None]] = [
        ("write", None),
        ("read", min(spec.regions)),
    ]
    for op, at in cases:
        batch = router.replicas_batch(jur, ids, op, health, dc, near=at)
        one = [router.route(UserKey(jur, i), op, health, dc, near=at) for i in ids]
        assert batch == [(r.replicas, r.regions) for r in one]


@settings(max_examples=100, deadline=None)
@given(topologies())
def test_entry_region_is_allowed_to_process(case: tuple[Spec, Health, str, int, str]) -> None:
    spec, health, jur, uid, dc = case
    router = Router(spec)
    allowed = router.residency.allowed_regions(jur, dc, "process")
    client = sorted(spec.regions)[uid % len(spec.regions)]
    if all(r in health.down_regions for r in allowed):
        with pytest.raises(NoHealthyReplicaError):
            router.entry_region(client, UserKey(jur, uid), health, dc)
        return
    entry = router.entry_region(client, UserKey(jur, uid), health, dc)
    assert entry in allowed and entry not in health.down_regions
    # nearest among the candidates
    rtt = router.network.rtt_ms
    assert all(
        rtt(client, entry) <= rtt(client, r) for r in allowed if r not in health.down_regions
    )


_ROUTES_SCRIPT = """
import json, sys
from geoshard.spec import load_spec
from geoshard.cluster.routing import Router, Health
r = Router.from_spec(load_spec(sys.argv[1]))
h = Health.of(["eu-central/hot-1", "us-east/hot-0"])
print(json.dumps([r.route(f"{j}:{i}", "read", h).replicas for j in ("eu", "us") for i in range(0, 400000, 997)]))
"""


def test_routes_identical_across_hash_seeds() -> None:
    spec = str(REPO / "examples" / "local.yaml")
    outs = []
    for seed in ("0", "123", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", _ROUTES_SCRIPT, spec],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        outs.append(json.loads(proc.stdout))
    assert outs[0] == outs[1] == outs[2]
    assert len(outs[0]) > 500
    # and the same as this process
    router = Router.from_spec(load_spec(spec))
    h = Health.of(["eu-central/hot-1", "us-east/hot-0"])
    assert outs[0][0] == list(router.route("eu:0", "read", h).replicas)


def test_failover_stays_in_jurisdiction_and_prefers_other_region() -> None:
    router = Router.from_spec(load_spec(REPO / "examples" / "local.yaml"))
    base = router.route("eu:42")
    assert set(base.regions) == {"eu-west", "eu-central"}
    down_region = base.regions[0]
    moved = router.route("eu:42", health=Health.of([down_region]))
    assert moved.failed_over
    assert all(r != down_region and r.startswith("eu-") for r in moved.regions)
    assert moved.skipped and all(why == "region down" for _, why in moved.skipped)


def test_read_near_a_region_reads_the_replica_there() -> None:
    router = Router.from_spec(load_spec(REPO / "examples" / "local.yaml"))
    seen_swap = False
    for uid in range(200):
        key = f"eu:{uid}"
        write = router.route(key, "write")
        assert set(write.regions) == {"eu-west", "eu-central"}  # one copy per EU region
        for near in ("eu-central", "eu-west"):
            read = router.route(key, "read", near=near)
            assert read.regions[0] == near and read.primary == read.replicas[0]
            assert sorted(read.replicas) == sorted(write.replicas)
            assert not read.failed_over  # reordering alone is not a failover
            # the write order is unchanged by near: primary first, ring order
            assert router.route(key, "write", near=near).replicas == write.replicas
        seen_swap |= write.regions[0] != "eu-central"
    assert seen_swap  # some primaries are in eu-west, and the read still stays in eu-central
    # without near a read keeps ring order (primary first)
    assert router.route("eu:42", "read").replicas == router.route("eu:42", "write").replicas
    # us data may be stored in us-east and eu-west: read near eu-central -> eu-west (nearer)
    r = router.route("us:5", "read", near="eu-central")
    assert r.regions[0] == "eu-west" and set(r.regions) == {"us-east", "eu-west"}


def test_read_near_an_unknown_region_is_a_config_error() -> None:
    router = Router.from_spec(load_spec(REPO / "examples" / "local.yaml"))
    with pytest.raises(ConfigError, match="did you mean 'eu-west'"):
        router.route("eu:1", "read", near="eu-wst")


def test_no_allowed_region_left_raises_and_never_routes_elsewhere() -> None:
    router = Router.from_spec(load_spec(REPO / "examples" / "local.yaml"))
    with pytest.raises(NoHealthyReplicaError, match="eu-central, eu-west is down"):
        router.route("eu:7", "write", Health.of(["eu-west", "eu-central"]))
    # US data may live in us-east and eu-west (a rule in local.yaml): with us-east down it goes to eu-west
    r = router.route("us:7", "write", Health.of(["us-east"]))
    assert set(r.regions) == {"eu-west"}


@pytest.mark.parametrize(
    ("key", "exc", "pattern"),
    [
        ("eu-42", InputError, "malformed"),
        ("eu:-1", InputError, "malformed"),
        ("eu:99999999999999999999", InputError, "malformed"),
        ("zz:1", ConfigError, "names jurisdiction 'zz', which is not in the spec"),
        ("EU:1", InputError, "malformed"),
    ],
)
def test_bad_keys(key: str, exc: type[Exception], pattern: str) -> None:
    router = Router.from_spec(load_spec(REPO / "examples" / "local.yaml"))
    with pytest.raises(exc, match=pattern):
        router.route(key)


def test_item_data_is_not_routed_by_the_user_ring() -> None:
    router = Router.from_spec(load_spec(REPO / "examples" / "local.yaml"))
    with pytest.raises(ConfigError, match=r"item data is routed with Router\.item_shard"):
        router.route("eu:1", data_class="item_catalog")
    assert router.item_shard({"category": "books"}) == "items-b"
    assert router.item_shard({"category": "garden"}) == "items-c"


# --------------------------------------------------------------------------- CLI
def test_cli_route_json_explains_failover() -> None:
    spec = str(REPO / "examples" / "local.yaml")
    res = CliRunner().invoke(app, ["route", spec, "--user", "eu:42", "--down", "eu-west", "--json"])
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["entry_region"] == "eu-central"
    assert all(r["region"] == "eu-central" for r in data["replicas"])
    assert data["replicas"][0]["role"] == "read (primary)" and data["replicas"][0]["primary"]


@pytest.mark.parametrize("client", ["eu-west", "eu-central"])
def test_cli_route_read_names_the_copy_nearest_the_entry_and_write_the_primary(client: str) -> None:
    spec = str(REPO / "examples" / "local.yaml")
    base = ["route", spec, "--user", "eu:42", "--from", client, "--json"]
    read = json.loads(CliRunner().invoke(app, base).stdout)
    write = json.loads(CliRunner().invoke(app, [*base, "--op", "write"]).stdout)
    # eu:42 has a copy in both EU regions: the read uses the one where it enters
    assert read["entry_region"] == client
    assert read["replicas"][0]["region"] == client and read["replicas"][0]["role"].startswith(
        "read"
    )
    assert read["replicas"][0]["rtt_ms_from_entry"] == min(
        r["rtt_ms_from_entry"] for r in read["replicas"]
    )
    # the write goes to the ring primary, wherever the request enters
    assert write["replicas"][0]["role"] == "primary" and write["replicas"][0]["primary"]
    assert {r["node"] for r in read["replicas"]} == {r["node"] for r in write["replicas"]}
    assert [r["node"] for r in read["replicas"] if r["primary"]] == [write["replicas"][0]["node"]]


def test_cli_route_unknown_down_target() -> None:
    res = CliRunner().invoke(
        app, ["route", str(REPO / "examples" / "local.yaml"), "--user", "eu:42", "--down", "eu-wst"]
    )
    assert res.exit_code == 2
    assert "did you mean 'eu-west'" in res.stderr


def test_cli_route_with_no_allowed_region_exits_1() -> None:
    res = CliRunner().invoke(
        app,
        [
            "route",
            str(REPO / "examples" / "local.yaml"),
            "--user",
            "eu:42",
            "--down",
            "eu-west",
            "--down",
            "eu-central",
        ],
    )
    assert res.exit_code == 1
    assert "does not leave the jurisdiction" in res.stderr


def test_cli_rebalance_add_moves_about_ideal() -> None:
    res = CliRunner().invoke(
        app,
        [
            "rebalance",
            str(REPO / "examples" / "local.yaml"),
            "--add",
            "eu-west/hot-3",
            "--keys",
            "200000",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    # measured per jurisdiction's ring: eu-west is allowed for both eu and (by a rule) us
    # data, and each of those rings has 6 nodes, so the ideal is 1/7 in each
    assert {r["jurisdiction"] for r in data["rings"]} == {"eu", "us"}
    for ring in data["rings"]:
        assert ring["moved_between_old_nodes"] == 0
        assert abs(ring["ideal_fraction"] - 1 / 7) < 1e-9
        assert ring["ratio_to_ideal"] <= 1.10
        assert all(m["to"] == "eu-west/hot-3" for m in ring["top_moves"])


def test_cli_rebalance_needs_exactly_one_change() -> None:
    res = CliRunner().invoke(app, ["rebalance", str(REPO / "examples" / "local.yaml")])
    assert res.exit_code == 2
    assert "exactly one of --add NODE or --remove NODE" in res.stderr
