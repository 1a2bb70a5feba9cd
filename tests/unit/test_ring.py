"""The hash function and the ring: known answers, stability, API behaviour, bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from geoshard.errors import ConfigError, InputError
from geoshard.shards import (
    DEFAULT_VNODES,
    HashRing,
    bounded_capacities,
    hash_key,
    hash_keys,
    hash_str,
    splitmix64,
)

# -- known-answer vectors -----------------------------------------------------------------

GAMMA = 0x9E3779B97F4A7C15


def test_splitmix64_matches_the_published_sequence() -> None:
    # splitmix64 seeded with 0 (Steele, Lea, Flood 2014; Vigna's splitmix64.c) outputs
    # 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f; the k-th output is
    # splitmix64((k - 1) * GAMMA).
    assert splitmix64(0) == 0xE220A8397B1DCDAF
    assert splitmix64(GAMMA) == 0x6E789E6AA1B965F4
    assert splitmix64((2 * GAMMA) % 2**64) == 0x06C45D188009454F


def test_xxh3_of_empty_string_matches_the_reference() -> None:
    assert hash_str("") == 0x2D06800538D394C2


KNOWN_HASHES = {
    0: 16294208416658607535,
    1: 10451216379200822465,
    42: 13679457532755275413,
    2**64 - 1: 16490336266968443936,
    "": 3244421341483603138,
    "user:0": 9296640054432561966,
    "user:42": 11511735035886662826,
    "héllo": 7657728615535385375,
}


@pytest.mark.parametrize("key", list(KNOWN_HASHES), ids=repr)
def test_hash_key_known_answers(key: int | str) -> None:
    assert hash_key(key) == KNOWN_HASHES[key]


def test_batch_hash_equals_single_hash() -> None:
    ints = list(KNOWN_HASHES)[:4]
    assert hash_keys(np.array(ints, dtype=np.uint64)).tolist() == [KNOWN_HASHES[k] for k in ints]
    assert hash_keys(ints).tolist() == [KNOWN_HASHES[k] for k in ints]
    strs = list(KNOWN_HASHES)[4:]
    assert hash_keys(strs).tolist() == [KNOWN_HASHES[k] for k in strs]
    assert hash_keys(np.array(strs)).tolist() == [KNOWN_HASHES[k] for k in strs]
    assert hash_keys(np.arange(5, dtype=np.int64)).tolist() == [hash_key(k) for k in range(5)]


KNOWN_RING = ["node-a", "node-b", "node-c", "node-d"]
KNOWN_OWNERS: dict[int | str, str] = {
    0: "node-c",
    1: "node-b",
    42: "node-d",
    2**64 - 1: "node-c",
    "user:0": "node-a",
    "user:42": "node-a",
    "héllo": "node-c",
}


def test_owner_known_answers_for_a_fixed_ring() -> None:
    ring = HashRing(KNOWN_RING)
    assert {k: ring.owner(k) for k in KNOWN_OWNERS} == KNOWN_OWNERS
    assert ring.vnodes == DEFAULT_VNODES
    assert ring.point_count == 4 * DEFAULT_VNODES


def test_vnode_points_known_answers() -> None:
    ring = HashRing({"node-a": 1.0, "node-b": 2.0}, vnodes=8)
    assert ring.point_count == 24
    assert ring.positions_of_hashes(np.array([0], dtype=np.uint64)).tolist() == [0]
    assert int(np.asarray(ring._points)[0]) == 495584954293594516


_CHILD = """
import json, sys
from geoshard.shards import HashRing
ring = HashRing([f"node-{i}" for i in range(16)])
keys = list(range(500)) + [f"user:{i}" for i in range(500)]
print(json.dumps([ring.owner(k) for k in keys]))
"""


def test_owners_are_stable_across_processes_with_another_hash_seed() -> None:
    ring = HashRing([f"node-{i}" for i in range(16)])
    keys: list[int | str] = list(range(500)) + [f"user:{i}" for i in range(500)]
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout) == [ring.owner(k) for k in keys]


# -- ring behaviour -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ring() -> HashRing:
    return HashRing([f"node-{i:02d}" for i in range(8)], vnodes=256)


def test_walk_yields_every_node_once_starting_at_the_owner(ring: HashRing) -> None:
    keys: list[int | str] = [0, 7, "user:3", 2**63]
    for key in keys:
        walked = list(ring.walk(key))
        assert walked[0] == ring.owner(key)
        assert sorted(walked) == list(ring.nodes)


def test_owners_is_a_filtered_prefix_of_walk(ring: HashRing) -> None:
    walked = list(ring.walk("user:9"))
    assert ring.owners("user:9", 3) == walked[:3]
    allowed = {walked[5], walked[2]}
    assert ring.owners("user:9", 5, allowed=allowed) == [walked[2], walked[5]]
    assert ring.owners("user:9", 100) == walked


def test_owners_batch_agrees_with_owner(ring: HashRing) -> None:
    keys = list(range(2000)) + [2**64 - 1 - i for i in range(100)]
    idx = ring.owners_batch(np.array(keys, dtype=np.uint64))
    assert idx.dtype == np.int32
    assert [ring.nodes[i] for i in idx] == [ring.owner(k) for k in keys]
    strs = [f"item:{i}" for i in range(500)]
    assert [ring.nodes[i] for i in ring.owners_batch(strs)] == [ring.owner(k) for k in strs]
    assert ring.owners_batch([]).tolist() == []


def test_node_order_does_not_matter() -> None:
    a = HashRing(["x", "y", "z"], vnodes=64)
    b = HashRing(["z", "x", "y"], vnodes=64)
    assert a == b and a.nodes == ("x", "y", "z")
    assert all(a.owner(k) == b.owner(k) for k in range(500))


def test_rings_are_immutable_and_derived_rings_match_fresh_ones(ring: HashRing) -> None:
    bigger = ring.with_node("node-99", weight=2.0)
    assert "node-99" not in ring and "node-99" in bigger
    assert bigger == HashRing({**ring.weights, "node-99": 2.0}, vnodes=256)
    assert bigger.without_node("node-99") == ring
    with pytest.raises(TypeError):
        ring.weights["node-00"] = 3.0  # type: ignore[index]


def test_points_are_proportional_to_weight() -> None:
    ring = HashRing({"small": 1.0, "big": 3.0, "tiny": 0.0001}, vnodes=1000)
    assert ring.point_count == 1000 + 3000 + 1  # a node always keeps at least one point
    shares = ring.arc_shares()
    assert shares["big"] / shares["small"] == pytest.approx(3.0, rel=0.15)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_single_node_ring_owns_everything() -> None:
    ring = HashRing(["only"], vnodes=1)
    assert {ring.owner(k) for k in range(100)} == {"only"}
    assert list(ring.walk(5)) == ["only"]


def test_assign_bounded_respects_capacities_and_keeps_keys_on_primaries() -> None:
    ring = HashRing([f"n{i}" for i in range(5)], vnodes=32)  # few vnodes: uneven
    keys = np.arange(50_000)
    plain = np.bincount(ring.owners_batch(keys), minlength=5)
    result = ring.assign_bounded(keys, eps=0.1)
    assert result.loads.sum() == 50_000
    assert (result.loads <= result.capacities).all()
    assert result.capacities.tolist() == [11_000] * 5
    # Spill is the minimum: exactly the keys above capacity on their plain owner.
    assert result.spilled == int(np.maximum(plain - result.capacities, 0).sum())
    assert result.rounds <= len(ring) + 1
    on_primary = result.node_index == result.primary_index
    assert (result.primary_index == ring.owners_batch(keys)).all()
    assert result.spill_fraction == pytest.approx(1 - on_primary.mean())


def test_assign_bounded_sends_spilled_keys_clockwise_to_a_node_with_room() -> None:
    ring = HashRing([f"n{i}" for i in range(6)], vnodes=16)
    keys = list(range(3000))
    result = ring.assign_bounded(keys, eps=0.0)
    assert result.loads.tolist() == [500] * 6
    full = set()  # nodes a spilled key skipped must be full when it was placed
    for k, got, first in zip(keys, result.node_index, result.primary_index, strict=True):
        if got != first:
            walked = list(ring.walk(k))
            skipped = walked[: walked.index(ring.nodes[got])]
            assert ring.nodes[first] == skipped[0]
            full.update(skipped)
    assert all(result.loads[ring.index_of(n)] == result.capacities[ring.index_of(n)] for n in full)


def test_weighted_capacities_are_exact_decimals() -> None:
    assert bounded_capacities([1.0] * 16, 1_000_000, 0.05).tolist() == [65_625] * 16
    assert bounded_capacities([1.0, 3.0], 1000, 0.1).tolist() == [275, 825]
    ring = HashRing({"a": 1.0, "b": 3.0}, vnodes=64)
    result = ring.assign_bounded(np.arange(20_000), eps=0.0)
    assert result.loads.tolist() == [5000, 15_000]


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vnodes", "match"),
    [
        (0, r"vnodes\(=0\) must be > 0\."),
        (-3, r"vnodes\(=-3\) must be > 0\."),
        (2.5, r"vnodes\(=2\.5\) must be an int > 0\."),
        (True, r"vnodes\(=True\) must be an int > 0\."),
    ],
)
def test_bad_vnodes(vnodes: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        HashRing(["a"], vnodes=vnodes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("weight", "match"),
    [
        (-1.0, r"weight\(=-1\.0\) of node 'a' must be a finite number > 0"),
        (math.nan, r"weight\(=nan\) of node 'a' must be a finite number > 0"),
        (math.inf, r"weight\(=inf\) of node 'a' must be a finite number > 0"),
        (
            0,
            (
                r"weight\(=0\) of node 'a' must be a finite number > 0; to drain a node use "
                r"without_node\('a'\)"
            ),
        ),
        ("2", r"weight\(='2'\) of node 'a' must be a number > 0"),
    ],
)
def test_bad_weight(weight: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        HashRing({"a": weight, "b": 1.0})
    with pytest.raises(ConfigError, match=match):
        HashRing(["b"]).with_node("a", weight)  # type: ignore[arg-type]


def test_bad_node_sets() -> None:
    with pytest.raises(ConfigError, match=r"nodes is empty; a ring needs at least one node"):
        HashRing([])
    with pytest.raises(ConfigError, match=r"node name 'a' appears more than once"):
        HashRing(["a", "b", "a"])
    with pytest.raises(ConfigError, match=r"node name '' must be a non-empty str"):
        HashRing(["a", ""])
    with pytest.raises(ConfigError, match=r"node name 7 must be a non-empty str"):
        HashRing([7])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"nodes\(='abc'\) must be a collection"):
        HashRing("abc")
    with pytest.raises(ConfigError, match=r"node 'a' is already on the ring"):
        HashRing(["a"]).with_node("a")
    with pytest.raises(ConfigError, match=r"cannot remove 'a': it is the last node"):
        HashRing(["a"]).without_node("a")


def test_unknown_node_suggests_the_closest_name() -> None:
    ring = HashRing(["eu-west-1", "us-east-1"], vnodes=4)
    with pytest.raises(
        ConfigError, match=r"node 'eu-wset-1' is not on the ring; did you mean 'eu-west-1'\?"
    ):
        ring.without_node("eu-wset-1")
    with pytest.raises(ConfigError, match=r"node 'zzz' is not on the ring$"):
        ring.index_of("zzz")


@pytest.mark.parametrize(
    ("key", "match"),
    [
        (1.5, r"key 1\.5 has type float; keys must be int \(0 <= key < 2\*\*64\) or str"),
        (-1, r"key -1 is out of range; int keys must satisfy 0 <= key < 2\*\*64"),
        (2**64, r"key 18446744073709551616 is out of range"),
        (b"user", r"key b'user' has type bytes"),
        (True, r"key True has type bool"),
        (None, r"key None has type NoneType"),
    ],
)
def test_bad_keys_name_the_value(key: object, match: str) -> None:
    ring = HashRing(["a", "b"], vnodes=4)
    with pytest.raises(InputError, match=match):
        ring.owner(key)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=match):
        ring.owners_batch([0, key, 1])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        (np.array([1, -5, 2]), r"key -5 is out of range"),
        (np.array([0.5, 1.0]), r"key 0\.5 has type float"),
        (np.array([b"a"]), r"key b'a' has type bytes"),
        (np.array([True]), r"key True has type bool"),
    ],
)
def test_bad_key_arrays_name_the_first_bad_value(keys: np.ndarray, match: str) -> None:
    with pytest.raises(InputError, match=match):
        HashRing(["a"], vnodes=4).owners_batch(keys)


def test_bad_counts_and_eps() -> None:
    ring = HashRing(["a", "b"], vnodes=4)
    with pytest.raises(ConfigError, match=r"n\(=0\) must be an int >= 1"):
        ring.owners(1, 0)
    for eps in (-0.1, math.nan):
        with pytest.raises(ConfigError, match=rf"eps\(={eps}\) must be a finite number >= 0"):
            ring.assign_bounded([1, 2], eps=eps)


@pytest.mark.parametrize("vnodes", [1, 3, 256])
def test_batch_lookup_is_exact_at_points_and_bucket_edges(vnodes: int) -> None:
    # The batch path resolves most keys through a top-bits bucket table; probe the
    # places where that could go wrong: every point, its neighbours, every bucket edge.
    ring = HashRing([f"n{i}" for i in range(7)], vnodes=vnodes)
    points = np.asarray(ring._points, dtype=np.uint64)
    shift, _ = ring._bucket_table()
    edges = np.arange(1 << (64 - shift), dtype=np.uint64) << np.uint64(shift)
    with np.errstate(over="ignore"):
        probes = np.concatenate(
            [
                points,
                points - np.uint64(1),
                points + np.uint64(1),
                edges,
                edges - np.uint64(1),
                np.array([0, 2**64 - 1], dtype=np.uint64),
            ]
        )
    expected = ring._point_node[np.searchsorted(points, probes) % len(points)]
    assert (ring.owners_of_hashes(probes) == expected).all()
