"""Replica placement: distinct regions, allowed regions only, health as an input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoshard.errors import ConfigError, InputError
from geoshard.shards import HashRing, Placement

REGIONS = ["eu-west", "eu-central", "us-east", "us-west", "ap-south"]


@pytest.fixture(scope="module")
def placement() -> Placement:
    node_region = {f"{region}-{i}": region for region in REGIONS for i in range(3)}
    return Placement(HashRing(list(node_region), vnodes=64), node_region)


def test_replicas_take_one_node_per_region_in_ring_order(placement: Placement) -> None:
    allowed = {"eu-west", "eu-central", "us-east"}
    for key in range(200):
        replicas = placement.replicas(key, 3, allowed)
        assert len({placement.node_region[n] for n in replicas}) == 3
        walked = [n for n in placement.ring.walk(key) if placement.node_region[n] in allowed]
        assert replicas[0] == walked[0]
        # Each replica is the first node of its region in ring order.
        for node in replicas:
            region = placement.node_region[node]
            assert node == next(n for n in walked if placement.node_region[n] == region)


def test_fewer_regions_than_replicas_fill_in_ring_order(placement: Placement) -> None:
    allowed = {"eu-west", "eu-central"}
    keys: list[int | str] = ["user:1", "user:2", 77]
    for key in keys:
        replicas = placement.replicas(key, 4, allowed)
        walked = [n for n in placement.ring.walk(key) if placement.node_region[n] in allowed]
        distinct = [
            walked[0],
            next(n for n in walked if placement.node_region[n] != placement.node_region[walked[0]]),
        ]
        assert replicas[:2] == distinct
        assert replicas[2:] == [n for n in walked if n not in distinct][:2]


def test_down_nodes_are_skipped_and_the_next_node_takes_over(placement: Placement) -> None:
    key = "user:7"
    before = placement.replicas(key, 2, {"eu-west", "us-east"})
    after = placement.replicas(key, 2, {"eu-west", "us-east"}, down={before[0]})
    assert before[0] not in after
    assert before[1] in after
    assert (
        placement.node_region[after[after.index(before[1]) ^ 1]] == placement.node_region[before[0]]
    )


def test_no_healthy_node_gives_an_empty_list(placement: Placement) -> None:
    eu_west = {n for n, r in placement.node_region.items() if r == "eu-west"}
    assert placement.replicas(1, 3, {"eu-west"}, down=eu_west) == []
    assert placement.failover_order(1, 3, {"eu-west"}, down=eu_west) == []
    assert placement.replicas(1, 3, set()) == []


def test_failover_order_is_replicas_then_the_rest_in_ring_order(placement: Placement) -> None:
    allowed = {"us-east", "us-west"}
    order = placement.failover_order("user:3", 2, allowed)
    assert order[:2] == placement.replicas("user:3", 2, allowed)
    walked = [n for n in placement.ring.walk("user:3") if placement.node_region[n] in allowed]
    assert sorted(order) == sorted(walked)
    assert order[2:] == [n for n in walked if n not in order[:2]]


def test_bad_placement_input(placement: Placement) -> None:
    ring = HashRing(["a", "b", "c"], vnodes=4)
    with pytest.raises(ConfigError, match=r"node_region has no region for ring node\(s\) 'b', 'c'"):
        Placement(ring, {"a": "eu"})
    with pytest.raises(
        ConfigError,
        match=r"region 'eu-wset' is not known to this placement; "
        r"did you mean 'eu-west'\?",
    ):
        placement.replicas(1, 2, {"eu-wset"})
    with pytest.raises(ConfigError, match=r"allowed_regions\(='eu-west'\) must be a collection"):
        placement.replicas(1, 2, "eu-west")
    with pytest.raises(ConfigError, match=r"r\(=0\) must be an int >= 1"):
        placement.replicas(1, 0, {"eu-west"})
    with pytest.raises(InputError, match=r"key -3 is out of range"):
        placement.replicas(-3, 2, {"eu-west"})


def test_regions_without_nodes_are_accepted_when_declared() -> None:
    ring = HashRing(["a", "b"], vnodes=4)
    placement = Placement(ring, {"a": "eu", "b": "us"}, regions=["eu", "us", "ap"])
    assert placement.replicas(5, 2, {"ap"}) == []
    assert sorted(placement.replicas(5, 2, {"ap", "eu", "us"})) == ["a", "b"]


# -- properties ---------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Placement, int | str, int, set[str], set[str]]:
    regions = REGIONS[: draw(st.integers(1, len(REGIONS)))]
    names = draw(
        st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=1, max_size=12, unique=True)
    )
    node_region = {n: draw(st.sampled_from(regions)) for n in names}
    weights = {n: draw(st.sampled_from([0.5, 1.0, 2.0])) for n in names}
    ring = HashRing(weights, vnodes=draw(st.integers(1, 24)))
    allowed = draw(st.sets(st.sampled_from(regions)))
    down = draw(st.sets(st.sampled_from(names)))
    key = draw(st.one_of(st.integers(0, 2**64 - 1), st.text(max_size=8)))
    r = draw(st.integers(1, 6))
    return Placement(ring, node_region, regions=regions), key, r, allowed, down


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_placement_invariants(
    scenario: tuple[Placement, int | str, int, set[str], set[str]],
) -> None:
    placement, key, r, allowed, down = scenario
    region_of = placement.node_region
    replicas = placement.replicas(key, r, allowed, down)
    eligible = [n for n in placement.ring.nodes if region_of[n] in allowed and n not in down]
    healthy_regions = {region_of[n] for n in eligible}

    assert all(region_of[n] in allowed for n in replicas)  # never outside the jurisdiction
    assert not set(replicas) & down  # never a down node
    assert len(set(replicas)) == len(replicas)  # no duplicates
    assert len(replicas) == min(r, len(eligible))
    # Distinct regions whenever enough allowed regions have healthy nodes.
    assert len({region_of[n] for n in replicas}) == min(r, len(healthy_regions))

    order = placement.failover_order(key, r, allowed, down)
    assert order[: len(replicas)] == replicas
    assert sorted(order) == sorted(eligible)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_replica_codes_precomputed_for_every_point_match_the_walk(data) -> None:
    regions = REGIONS[: data.draw(st.integers(2, 5))]
    per = data.draw(st.integers(1, 4))
    node_region = {f"{region}-{i}": region for region in regions for i in range(per)}
    pl = Placement(HashRing(list(node_region), vnodes=data.draw(st.integers(1, 16))), node_region)
    allowed = frozenset(data.draw(st.sets(st.sampled_from(regions), min_size=1)))
    dead = frozenset(data.draw(st.sets(st.sampled_from(sorted(node_region)), max_size=3)))
    r = data.draw(st.integers(1, 3))
    keys = list(range(300))
    if not any(node_region[n] in allowed and n not in dead for n in node_region):
        return
    codes, sets = pl.replica_codes(keys, r, allowed, dead)
    for k, c in zip(keys, codes.tolist(), strict=True):
        assert sets[c] == tuple(pl.replicas(k, r, set(allowed), set(dead))), (k, r)
