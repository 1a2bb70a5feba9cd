"""Which hot node serves which share of a jurisdiction's keys: the real ring, analytically.

The planner needs each hot node's share of the requests that reach the hot tier. Keys are
user ids with Zipf popularity, hashed onto the ring by :func:`geoshard.shards.hash_keys`
(the router's hash). Two parts:

* **the head**: the ``HEAD_KEYS`` most popular users of a jurisdiction are routed one by
  one (vectorised), so a very popular user lands on its real node;
* **the tail** (everyone else, billions of users): a node's expected share of a large set
  of uniformly hashed keys is exactly its share of the hash circle
  (:meth:`HashRing.arc_shares`), so the tail is spread by arc shares, with no sampling.

Which node of a region holds a key follows from the placement rule of
:class:`~geoshard.shards.Placement` (one replica per allowed region, in ring order,
then further nodes): when the replication factor equals the number of live allowed
regions, every such region holds one copy of every key, on **the first of its own live
nodes clockwise from the key**; the ring of that region's nodes alone gives it. When a
jurisdiction is down to one live region and the factor is 2, the copies are the first and
the second distinct node clockwise in that region: the node of the next run of points
(:attr:`HashRing.points`), so its share is exact too, as is where a down node's keys go. Other cases (fewer
replicas than live regions, or more than two in one region) are answered by the analytic
model's general path: the real :class:`~geoshard.cluster.routing.Router` over the head
and a stratified sample of the tail (``geoshard.sim.analytic``). ``tests/unit/
test_plan_analytic.py`` checks the fast path against the router key by key.

Examples:
    >>> ring = RegionRing.of("eu-west", 4, {}, 64)
    >>> round(sum(ring.shares.values()), 9), round(sum(ring.second_shares.values()), 9)
    (1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from geoshard.shards import HashRing, hash_keys

__all__ = ["HEAD_KEYS", "RegionRing", "node_names"]

#: the most popular users of each jurisdiction, routed key by key.
HEAD_KEYS = 4096


def node_names(region: str, count: int) -> list[str]:
    """The hot node names of a region with ``count`` nodes (as the spec names them)."""
    return [f"{region}/hot-{i}" for i in range(count)]


@dataclass
class RegionRing:
    """The ring of one region's live hot nodes: arc shares, and where keys go next.

    Attributes:
        region: the region.
        ring: the :class:`HashRing` of its live nodes (weights and vnodes from the spec).
        shares: node -> share of the hash circle (its first copies).
    """

    region: str
    ring: HashRing
    shares: dict[str, float]
    _arcs: np.ndarray = field(repr=False)
    _owner: np.ndarray = field(repr=False)
    _next: np.ndarray = field(repr=False)

    @classmethod
    def of(
        cls,
        region: str,
        count: int,
        weights: Mapping[str, float],
        vnodes: int,
        down: frozenset[str] = frozenset(),
    ) -> RegionRing:
        """The ring of ``region`` with ``count`` nodes, without the nodes in ``down``."""
        names = [n for n in node_names(region, count) if n not in down]
        ring = HashRing({n: float(weights.get(n, 1.0)) for n in names}, vnodes=vnodes)
        pts = ring.points.astype(np.float64)
        arcs = np.diff(pts, prepend=pts[-1] - 2.0**64) / 2.0**64  # arc ending at each point
        owner = np.asarray(ring.point_nodes, dtype=np.int64)
        # a run is consecutive points of one node; the node of the next run is the second
        # distinct node clockwise for every key of the run
        n = len(owner)
        starts = np.flatnonzero(np.concatenate(([True], owner[1:] != owner[:-1])))
        run_of = np.cumsum(np.concatenate(([0], (owner[1:] != owner[:-1]).astype(np.int64))))
        nxt_run_owner = owner[np.roll(starts, -1)] if len(starts) > 1 else owner[starts]
        nxt = nxt_run_owner[run_of]
        if len(starts) > 1 and owner[0] == owner[n - 1]:  # the last run wraps into the first
            last = run_of == run_of[-1]
            nxt[last] = nxt_run_owner[0]
        share = np.bincount(owner, weights=arcs, minlength=len(ring.nodes))
        return cls(
            region, ring, dict(zip(ring.nodes, share.tolist(), strict=True)), arcs, owner, nxt
        )

    def _nodes_at(self, hashes: np.ndarray, second: bool, without: str | None) -> list[str]:
        pos = self.ring.positions_of_hashes(hashes)
        first = self._owner[pos]
        out = self._next[pos] if second else first
        if without is not None:
            x = self.ring.index_of(without)
            out = np.where(first == x, self._next[pos], out)
        names = self.ring.nodes
        return [names[i] for i in out.tolist()]

    def first_nodes(self, hashes: np.ndarray, without: str | None = None) -> list[str]:
        """The first node clockwise from each hash (skipping ``without``)."""
        return self._nodes_at(hashes, False, without)

    def second_nodes(self, hashes: np.ndarray) -> list[str]:
        """The second distinct node clockwise from each hash (its first when alone)."""
        return self._nodes_at(hashes, True, None)

    @property
    def second_shares(self) -> dict[str, float]:
        """Node -> share of the circle whose second distinct node it is (exact)."""
        share = np.bincount(self._next, weights=self._arcs, minlength=len(self.ring.nodes))
        return dict(zip(self.ring.nodes, share.tolist(), strict=True))

    def shares_without(self, node: str) -> dict[str, float]:
        """Node -> share of the circle when ``node`` is down (its keys go to the next)."""
        x = self.ring.index_of(node)
        owner = np.where(self._owner == x, self._next, self._owner)
        share = np.bincount(owner, weights=self._arcs, minlength=len(self.ring.nodes))
        return {n: s for n, s in zip(self.ring.nodes, share.tolist(), strict=True) if n != node}


def head_hashes(ids: np.ndarray) -> np.ndarray:
    """The ring positions of user ids (the router's hash)."""
    return hash_keys(np.asarray(ids, dtype=np.int64))
