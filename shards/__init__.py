"""geoshard.shards: the consistent-hash ring, replica placement and shard maps.

Pure logic, no I/O and no clock; the simulator and the running system call the same
objects.

* :class:`HashRing`: an immutable ring with virtual nodes and weights, single-key
  lookups (``owner``, ``walk``, ``owners``), vectorised ``owners_batch`` and bounded
  loads (``assign_bounded``).
* :class:`Placement`: replicas on distinct regions inside the allowed regions, and the
  failover order a router walks.
* :class:`ItemShardMap`: items routed by an attribute value.
* :func:`plan_rebalance`: what moves when the ring changes, against the ideal.

Examples:
    >>> from geoshard.shards import HashRing
    >>> ring = HashRing(["node-a", "node-b", "node-c"])
    >>> ring.owner(12345) == ring.nodes[ring.owners_batch([12345])[0]]
    True
"""

from __future__ import annotations

from geoshard.shards.bounded import BoundedAssignment, assign_bounded, bounded_capacities
from geoshard.shards.hashing import Key, hash_key, hash_keys, hash_str, splitmix64
from geoshard.shards.items import ItemShardMap
from geoshard.shards.placement import Placement
from geoshard.shards.rebalance import RebalancePlan, ideal_moved_fraction, plan_rebalance
from geoshard.shards.ring import DEFAULT_VNODES, HashRing

__all__ = [
    "DEFAULT_VNODES",
    "BoundedAssignment",
    "HashRing",
    "ItemShardMap",
    "Key",
    "Placement",
    "RebalancePlan",
    "assign_bounded",
    "bounded_capacities",
    "hash_key",
    "hash_keys",
    "hash_str",
    "ideal_moved_fraction",
    "plan_rebalance",
    "splitmix64",
]
