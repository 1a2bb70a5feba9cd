"""Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, SODA 2018).

Each node ``i`` gets a capacity ``ceil((1 + eps) * m * w_i / W)`` for ``m`` keys and
weights ``w`` summing to ``W`` (``ceil((1 + eps) * m / n)`` with equal weights), and a key
goes to the first node clockwise from its hash that is not yet full. No node ever holds
more than its capacity.

The paper allows any insertion order; we fix one that vectorises and keeps as many keys
as possible on their plain owner. Keys are placed in rounds: in round 0 every key asks
its plain owner; each round, a node accepts the askers with the lowest input index
until it is full; rejected keys move on to the next point clockwise whose node still
has room and ask again in the next round. Because accepted keys are never evicted, this
equals the sequential algorithm with keys inserted by (round, input index): every node
a key passed over was full when the key was inserted. A node rejects keys only in the
round it fills, so there are at most ``n`` rounds, and spill (keys not on their plain
owner) is the minimum possible, ``sum(max(0, primary_load - capacity)) / m``.

``eps`` and the weights are read as the decimals they print as (``0.05`` is exactly
1/20), so ``eps=0.05`` on 1,000,000 keys and 16 equal nodes gives capacity 65,625, not
65,626 from float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from geoshard.errors import ConfigError
from geoshard.shards.hashing import Key, hash_keys

if TYPE_CHECKING:
    from geoshard.shards.ring import HashRing

__all__ = ["BoundedAssignment", "assign_bounded", "bounded_capacities"]


@dataclass(frozen=True, eq=False)
class BoundedAssignment:
    """The result of :func:`assign_bounded`.

    Attributes:
        nodes: node names; ``node_index`` and ``loads`` index into this tuple.
        node_index: ``int32`` array, the node of each key, in input order.
        primary_index: ``int32`` array, the plain consistent-hashing owner of each key.
        loads: ``int64`` array, keys per node.
        capacities: ``int64`` array, the cap of each node.
        eps: the balance parameter used.
        rounds: probing rounds the assignment took (at most ``len(nodes) + 1``).
    """

    nodes: tuple[str, ...]
    node_index: np.ndarray
    primary_index: np.ndarray
    loads: np.ndarray
    capacities: np.ndarray
    eps: float
    rounds: int

    @property
    def spilled(self) -> int:
        """Number of keys not on their plain owner."""
        return int(np.count_nonzero(self.node_index != self.primary_index))

    @property
    def spill_fraction(self) -> float:
        """Fraction of keys not on their plain owner (0.0 for no keys)."""
        total = len(self.node_index)
        return self.spilled / total if total else 0.0

    @property
    def max_over_mean(self) -> float:
        """Largest load divided by the mean load (1.0 for no keys)."""
        total = int(self.loads.sum())
        return float(self.loads.max()) * len(self.loads) / total if total else 1.0


def bounded_capacities(weights: Iterable[float], keys: int, eps: float) -> np.ndarray:
    """Return ``ceil((1 + eps) * keys * w_i / sum(w))`` per node, in exact arithmetic.

    Args:
        weights: node weights, in node-index order.
        keys: number of keys ``m``.
        eps: the balance parameter, ``>= 0``.

    Raises:
        ConfigError: ``eps`` is negative or not finite.

    Examples:
        >>> bounded_capacities([1.0] * 16, 1_000_000, 0.05).tolist()[0]
        65625
    """
    if (
        isinstance(eps, bool)
        or not isinstance(eps, (int, float))
        or not math.isfinite(eps)
        or eps < 0
    ):
        raise ConfigError(f"eps(={eps!r}) must be a finite number >= 0.")
    w = [Fraction(str(x)) for x in weights]
    factor = (1 + Fraction(str(eps))) * keys / sum(w)
    return np.array([math.ceil(factor * x) for x in w], dtype=np.int64)


def assign_bounded(
    ring: HashRing, keys: Iterable[Key] | np.ndarray, eps: float
) -> BoundedAssignment:
    """Assign keys to ring nodes so that no node exceeds ``ceil((1 + eps) * m * w_i / W)``.

    Vectorised: each round is a few NumPy passes over the keys still unplaced; 1,000,000
    int keys on 16 nodes take well under a second.

    Args:
        ring: the ring.
        keys: the keys (see :meth:`HashRing.owners_batch`); their order is the tie-break.
        eps: the balance parameter, ``>= 0``; ``0`` gives perfectly even loads.

    Returns:
        The assignment, with loads and the spill fraction.

    Raises:
        ConfigError: ``eps`` is negative or not finite.
        InputError: a key is bad.

    Examples:
        >>> from geoshard.shards.ring import HashRing
        >>> result = HashRing(["a", "b", "c"]).assign_bounded(range(3000), eps=0.0)
        >>> result.loads.tolist()
        [1000, 1000, 1000]
    """
    hashes = hash_keys(keys)
    nodes = ring.nodes
    caps = bounded_capacities((ring.weights[n] for n in nodes), len(hashes), eps)
    point_node = ring.point_nodes
    primary = ring.owners_of_hashes(hashes)
    pos = np.empty(0, dtype=np.intp)  # ring positions of the pending keys, from round 1
    assigned = primary.copy()
    remaining = caps.copy()
    pending = np.arange(len(hashes))
    target = primary
    rounds = 0
    while pending.size:
        rounds += 1
        asked = np.bincount(target, minlength=len(nodes))
        over = asked > remaining
        accept = np.ones(len(pending), dtype=bool)
        if over.any():
            # Keys asking an overfull node: keep the lowest input indices (pending is
            # ascending, and a stable sort keeps that order within each node).
            contested = np.flatnonzero(over[target])
            order = contested[np.argsort(target[contested], kind="stable")]
            group = target[order]
            starts = np.searchsorted(group, group, side="left")
            rank = np.arange(len(order)) - starts
            accept[order[rank >= remaining[group]]] = False
        assigned[pending[accept]] = target[accept]
        remaining -= np.minimum(asked, remaining)
        if rounds == 1:
            pending = pending[~accept]
            pos = ring.positions_of_hashes(hashes[pending])
        else:
            pending, pos = pending[~accept], pos[~accept]
        if pending.size:
            open_points = np.flatnonzero(remaining[point_node] > 0)
            nxt = np.searchsorted(open_points, pos + 1, side="left")
            nxt[nxt == len(open_points)] = 0
            pos = open_points[nxt]
            target = point_node[pos]
    loads = np.bincount(assigned, minlength=len(nodes)).astype(np.int64)
    return BoundedAssignment(
        nodes=nodes,
        node_index=assigned,
        primary_index=primary,
        loads=loads,
        capacities=caps,
        eps=float(eps),
        rounds=rounds,
    )
