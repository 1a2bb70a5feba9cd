"""Rebalance plans: which keys move when the ring changes, and how that compares to ideal.

The ideal moved fraction is the least any placement could move while keeping loads
proportional to weight: the total-variation distance between the old and new weight
shares, ``sum(|new_i - old_i|) / 2``. For equal weights that is ``1/(n+1)`` when a node
joins ``n`` nodes and ``1/n`` when one of ``n`` leaves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from geoshard.shards.hashing import Key, hash_keys
from geoshard.shards.ring import HashRing

__all__ = ["RebalancePlan", "ideal_moved_fraction", "plan_rebalance"]


@dataclass(frozen=True)
class RebalancePlan:
    """What moves between two rings for one key set.

    Attributes:
        total_keys: keys examined.
        moved_keys: keys whose owner changes.
        ideal_fraction: the least fraction any weight-proportional placement must move.
        moves: ``(from_node, to_node) -> key count``, for moved keys only.
        moved_between_kept_nodes: moved keys whose old and new owner are both on both
            rings (0 for consistent hashing when nodes only join or leave).
    """

    total_keys: int
    moved_keys: int
    ideal_fraction: float
    moves: Mapping[tuple[str, str], int]
    moved_between_kept_nodes: int

    @property
    def moved_fraction(self) -> float:
        """``moved_keys / total_keys`` (0.0 for no keys)."""
        return self.moved_keys / self.total_keys if self.total_keys else 0.0

    @property
    def ratio_to_ideal(self) -> float:
        """``moved_fraction / ideal_fraction``; 1.0 when both are 0, inf when only ideal is."""
        if self.ideal_fraction == 0:
            return 1.0 if self.moved_keys == 0 else math.inf
        return self.moved_fraction / self.ideal_fraction


def ideal_moved_fraction(old: Mapping[str, float], new: Mapping[str, float]) -> float:
    """Return the total-variation distance between two weight maps' normalised shares.

    Examples:
        >>> round(ideal_moved_fraction({"a": 1, "b": 1}, {"a": 1, "b": 1, "c": 1}), 6)
        0.333333
    """
    old_total, new_total = sum(old.values()), sum(new.values())
    names = set(old) | set(new)
    return sum(abs(new.get(n, 0.0) / new_total - old.get(n, 0.0) / old_total) for n in names) / 2


def plan_rebalance(
    old_ring: HashRing, new_ring: HashRing, keys: Iterable[Key] | np.ndarray
) -> RebalancePlan:
    """Compare key ownership on two rings (vectorised through the batch lookup).

    Args:
        old_ring: the ring before the change.
        new_ring: the ring after the change.
        keys: the keys to examine (see :meth:`HashRing.owners_batch`).

    Returns:
        The plan: moved and ideal fractions, per-pair move counts and moves between
        nodes present on both rings.

    Raises:
        InputError: a key is bad.

    Examples:
        >>> old = HashRing([f"n{i}" for i in range(4)])
        >>> plan = plan_rebalance(old, old.with_node("n4"), range(20_000))
        >>> plan.moved_between_kept_nodes, {dst for _, dst in plan.moves}
        (0, {'n4'})
    """
    hashes = hash_keys(keys)
    before = old_ring.owners_of_hashes(hashes).astype(np.int64)
    after = new_ring.owners_of_hashes(hashes).astype(np.int64)
    old_names = np.array(old_ring.nodes, dtype=object)
    new_names = np.array(new_ring.nodes, dtype=object)
    # Compare by name: indices differ between rings when a node joins or leaves.
    new_index_of_old = np.array(
        [new_ring.nodes.index(n) if n in new_ring else -1 for n in old_ring.nodes], dtype=np.int64
    )
    moved = new_index_of_old[before] != after
    pair_codes, counts = np.unique(before[moved] * len(new_ring) + after[moved], return_counts=True)
    moves = {
        (str(old_names[c // len(new_ring)]), str(new_names[c % len(new_ring)])): int(k)
        for c, k in zip(pair_codes.tolist(), counts.tolist(), strict=True)
    }
    kept = set(old_ring.nodes) & set(new_ring.nodes)
    between_kept = sum(k for (src, dst), k in moves.items() if src in kept and dst in kept)
    return RebalancePlan(
        total_keys=len(hashes),
        moved_keys=int(moved.sum()),
        ideal_fraction=ideal_moved_fraction(old_ring.weights, new_ring.weights),
        moves=moves,
        moved_between_kept_nodes=between_kept,
    )
