"""Rebalance plans: what moves on join, leave and re-weighting, against the ideal."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoshard.shards import HashRing, ideal_moved_fraction, plan_rebalance

KEYS = np.arange(100_000, dtype=np.uint64)


@pytest.fixture(scope="module")
def ring() -> HashRing:
    return HashRing([f"node-{i}" for i in range(8)], vnodes=512)


def test_join_moves_only_to_the_new_node(ring: HashRing) -> None:
    plan = plan_rebalance(ring, ring.with_node("node-8"), KEYS)
    assert plan.ideal_fraction == pytest.approx(1 / 9)
    assert plan.moved_between_kept_nodes == 0
    assert {dst for _, dst in plan.moves} == {"node-8"}
    assert sum(plan.moves.values()) == plan.moved_keys
    assert plan.ratio_to_ideal == pytest.approx(1.0, abs=0.15)


def test_leave_moves_only_the_leaving_nodes_keys(ring: HashRing) -> None:
    smaller = ring.without_node("node-3")
    plan = plan_rebalance(ring, smaller, KEYS)
    owned = int(np.count_nonzero(ring.owners_batch(KEYS) == ring.index_of("node-3")))
    assert plan.moved_keys == owned
    assert plan.ideal_fraction == pytest.approx(1 / 8)
    assert {src for src, _ in plan.moves} == {"node-3"}
    assert plan.moved_between_kept_nodes == 0


def test_unchanged_ring_moves_nothing(ring: HashRing) -> None:
    plan = plan_rebalance(ring, HashRing(list(ring.nodes), vnodes=512), KEYS)
    assert (plan.moved_keys, plan.moved_fraction, plan.ratio_to_ideal) == (0, 0.0, 1.0)
    assert plan.moves == {}


def test_reweighting_moves_keys_only_to_the_heavier_node(ring: HashRing) -> None:
    plan = plan_rebalance(ring, ring.with_weight("node-0", 2.0), KEYS)
    assert plan.ideal_fraction == pytest.approx(
        ideal_moved_fraction(ring.weights, {**ring.weights, "node-0": 2.0})
    )
    assert {dst for _, dst in plan.moves} == {"node-0"}
    assert plan.moved_between_kept_nodes == plan.moved_keys  # both ends are kept nodes


def test_string_keys_are_planned_too(ring: HashRing) -> None:
    keys = [f"user:{i}" for i in range(5000)]
    new = ring.with_node("node-8")
    plan = plan_rebalance(ring, new, keys)
    assert plan.moved_keys == sum(ring.owner(k) != new.owner(k) for k in keys)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 10), st.integers(0, 9), st.booleans())
def test_join_or_leave_never_moves_keys_between_kept_nodes(n: int, which: int, join: bool) -> None:
    old = HashRing([f"n{i}" for i in range(n)], vnodes=32)
    new = old.with_node(f"n{n}") if join else old.without_node(f"n{which % n}")
    plan = plan_rebalance(old, new, KEYS[:5000])
    assert plan.moved_between_kept_nodes == 0
