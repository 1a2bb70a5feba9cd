"""The consistent-hash ring: virtual nodes, weights, single-key and batch lookups.

A node ``name`` with weight ``w`` owns ``max(1, round(vnodes * w))`` points on a 64-bit
circle; point ``i`` sits at ``hash_str(f"{name}#{i}")``. A key belongs to the first point
at or after its hash (:mod:`geoshard.shards.hashing`), wrapping past ``2**64 - 1`` to
the smallest point. Points of one node do not depend on the other nodes, so adding or
removing a node only moves keys to or from that node.

Rings are immutable: :meth:`HashRing.with_node` and :meth:`HashRing.without_node` return
new rings, so a router can swap rings atomically and the simulator can keep history.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from geoshard.errors import ConfigError, did_you_mean
from geoshard.shards.hashing import Key, hash_key, hash_keys, hash_str

if TYPE_CHECKING:
    from geoshard.shards.bounded import BoundedAssignment

__all__ = ["DEFAULT_VNODES", "HashRing"]

DEFAULT_VNODES = 3072
"""Points per unit of weight. A node's share of the circle spreads by about
``1/sqrt(vnodes)``, so with 16 nodes and 1,000,000 keys the hottest node carries a median
1.03x the mean load over random node names (2048 points: 1.04x; uhashring's 160: 1.14x).
The cost is memory, about 60 bytes per point (16 nodes: ~3 MB); for rings of hundreds of
nodes pass a smaller ``vnodes`` or use bounded loads."""


@lru_cache(maxsize=512)
def _node_points(name: str, count: int) -> np.ndarray:
    """The ring points of one node, read-only; cached so derived rings reuse them."""
    points = np.fromiter(
        (hash_str(f"{name}#{i}") for i in range(count)), dtype=np.uint64, count=count
    )
    points.flags.writeable = False
    return points


def _check_vnodes(vnodes: object) -> int:
    if isinstance(vnodes, bool) or not isinstance(vnodes, int):
        raise ConfigError(f"vnodes(={vnodes!r}) must be an int > 0.")
    if vnodes <= 0:
        raise ConfigError(f"vnodes(={vnodes}) must be > 0.")
    return vnodes


def _check_node(name: object, weight: object) -> tuple[str, float]:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"node name {name!r} must be a non-empty str.")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ConfigError(f"weight(={weight!r}) of node '{name}' must be a number > 0.")
    w = float(weight)
    if not math.isfinite(w) or w <= 0:
        raise ConfigError(
            f"weight(={weight!r}) of node '{name}' must be a finite number > 0; "
            f"to drain a node use without_node('{name}')."
        )
    return name, w


def _parse_nodes(nodes: Mapping[str, float] | Iterable[str]) -> dict[str, float]:
    if isinstance(nodes, str):
        raise ConfigError(f"nodes(={nodes!r}) must be a collection of node names, not one str.")
    parsed: dict[str, float] = {}
    if isinstance(nodes, Mapping):
        for name, weight in nodes.items():
            n, w = _check_node(name, weight)
            parsed[n] = w
    else:
        for name in nodes:
            n, w = _check_node(name, 1.0)
            if n in parsed:
                raise ConfigError(
                    f"node name '{n}' appears more than once; node names must be unique."
                )
            parsed[n] = w
    if not parsed:
        raise ConfigError("nodes is empty; a ring needs at least one node.")
    return parsed


class HashRing:
    """An immutable consistent-hash ring with virtual nodes and weights.

    Node indices (used by the batch methods) follow :attr:`nodes`, which is sorted by
    name, so two rings with the same nodes agree on indices whatever order the nodes
    were given in.

    Args:
        nodes: node names (weight 1.0 each) or a mapping ``name -> weight``.
        vnodes: points per unit of weight; a node owns ``max(1, round(vnodes * weight))``
            points.

    Raises:
        ConfigError: ``vnodes <= 0``, an empty node set, a duplicate or empty name, or a
            weight that is not a finite number > 0.

    Examples:
        >>> ring = HashRing(["a", "b", "c"])
        >>> ring.owner(42) in ring.nodes
        True
        >>> ring.owners("user:7", 2) == list(ring.walk("user:7"))[:2]
        True
        >>> ring.with_node("d").nodes
        ('a', 'b', 'c', 'd')
    """

    __slots__ = (
        "_buckets",
        "_index",
        "_nodes",
        "_owner_list",
        "_point_node",
        "_points",
        "_points_list",
        "_vnodes",
        "_weights",
    )

    _weights: Mapping[str, float]
    _vnodes: int
    _nodes: tuple[str, ...]
    _points: np.ndarray
    _point_node: np.ndarray
    _points_list: list[int]
    _owner_list: list[str]
    _index: Mapping[str, int]
    _buckets: tuple[int, np.ndarray] | None

    def __init__(
        self, nodes: Mapping[str, float] | Iterable[str], vnodes: int = DEFAULT_VNODES
    ) -> None:
        self._build(_parse_nodes(nodes), _check_vnodes(vnodes))

    def _build(self, weights: dict[str, float], vnodes: int) -> None:
        names = tuple(sorted(weights))
        per_node = [_node_points(n, max(1, round(vnodes * weights[n]))) for n in names]
        points = np.concatenate(per_node)
        owner = np.repeat(np.arange(len(names), dtype=np.int32), [len(p) for p in per_node])
        # Ties (a 64-bit collision) go to the node with the smaller name: deterministic.
        order = np.lexsort((owner, points))
        self._weights = MappingProxyType({n: weights[n] for n in names})
        self._vnodes = vnodes
        self._nodes = names
        self._points = points[order]
        self._point_node = owner[order]
        self._points.flags.writeable = False
        self._point_node.flags.writeable = False
        self._points_list = self._points.tolist()
        self._owner_list = [names[i] for i in self._point_node.tolist()]
        self._index = MappingProxyType({n: i for i, n in enumerate(names)})
        self._buckets = None

    @classmethod
    def _derived(cls, weights: dict[str, float], vnodes: int) -> HashRing:
        ring = cls.__new__(cls)
        ring._build(weights, vnodes)
        return ring

    # -- description -------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[str, ...]:
        """Node names sorted by name; position ``i`` is node index ``i`` in batch results."""
        return self._nodes

    @property
    def weights(self) -> Mapping[str, float]:
        """Read-only mapping ``name -> weight``."""
        return self._weights

    @property
    def vnodes(self) -> int:
        """Points per unit of weight."""
        return self._vnodes

    @property
    def point_count(self) -> int:
        """Total number of points on the ring."""
        return len(self._points_list)

    def index_of(self, name: str) -> int:
        """Return the batch index of node ``name``.

        Raises:
            ConfigError: the node is not on the ring (with a did-you-mean suggestion).
        """
        try:
            return self._index[name]
        except KeyError:
            raise self._unknown(name) from None

    def arc_shares(self) -> dict[str, float]:
        """Return the exact fraction of the 64-bit hash space each node owns.

        This is the load each node gets from uniformly hashed keys, without sampling.
        """
        pts = self._points.astype(np.float64)
        arcs = np.diff(pts, prepend=pts[-1] - 2.0**64)  # arc ending at each point
        share = np.bincount(self._point_node, weights=arcs, minlength=len(self._nodes))
        return dict(zip(self._nodes, (share / share.sum()).tolist(), strict=True))

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HashRing):
            return NotImplemented
        return self._vnodes == other._vnodes and dict(self._weights) == dict(other._weights)

    def __hash__(self) -> int:
        return hash((self._vnodes, tuple(self._weights.items())))

    def __repr__(self) -> str:
        return (
            f"HashRing(nodes={len(self._nodes)}, vnodes={self._vnodes}, points={self.point_count})"
        )

    # -- membership changes ------------------------------------------------------------

    def with_node(self, name: str, weight: float = 1.0) -> HashRing:
        """Return a new ring with node ``name`` added (this ring is unchanged).

        Raises:
            ConfigError: the node is already on the ring, or the name or weight is bad.
        """
        n, w = _check_node(name, weight)
        if n in self._index:
            raise ConfigError(
                f"node '{n}' is already on the ring; use with_weight() to change its weight."
            )
        return self._derived({**self._weights, n: w}, self._vnodes)

    def with_weight(self, name: str, weight: float) -> HashRing:
        """Return a new ring where node ``name`` has weight ``weight``.

        Raises:
            ConfigError: the node is not on the ring, or the weight is bad.
        """
        self.index_of(name)
        n, w = _check_node(name, weight)
        return self._derived({**self._weights, n: w}, self._vnodes)

    def without_node(self, name: str) -> HashRing:
        """Return a new ring with node ``name`` removed (this ring is unchanged).

        Raises:
            ConfigError: the node is not on the ring (with a did-you-mean suggestion), or
                it is the last node.
        """
        self.index_of(name)
        if len(self._nodes) == 1:
            raise ConfigError(
                f"cannot remove '{name}': it is the last node and a ring needs at least one."
            )
        return self._derived({n: w for n, w in self._weights.items() if n != name}, self._vnodes)

    def _unknown(self, name: object) -> ConfigError:
        return ConfigError(
            f"node {name!r} is not on the ring{did_you_mean(str(name), self._nodes)}"
        )

    # -- single-key lookups ------------------------------------------------------------

    def _position(self, key: Key) -> int:
        i = bisect_left(self._points_list, hash_key(key))
        return 0 if i == len(self._points_list) else i

    def owner(self, key: Key) -> str:
        """Return the node that owns ``key`` (the first point clockwise from its hash).

        Raises:
            InputError: the key is not an int in ``[0, 2**64)`` or a str.
        """
        i = bisect_left(self._points_list, hash_key(key))
        owners = self._owner_list
        return owners[i] if i < len(owners) else owners[0]

    def walk(self, key: Key) -> Iterator[str]:
        """Yield every node once, in ring order starting at the key's owner.

        The first node is :meth:`owner`; the rest are the failover order of plain
        consistent hashing. The iterator is lazy: stop early for cheap prefixes.
        """
        start = self._position(key)
        owners = self._owner_list
        total = len(self._nodes)
        seen: set[str] = set()
        for i in range(start, start + len(owners)):
            name = owners[i % len(owners)]
            if name not in seen:
                seen.add(name)
                yield name
                if len(seen) == total:
                    return

    def owners(self, key: Key, n: int, allowed: Any = None) -> list[str]:
        """Return the first ``n`` distinct nodes of :meth:`walk`, optionally filtered.

        Args:
            key: the key.
            n: how many nodes; fewer are returned when fewer qualify.
            allowed: when given, any container (``in`` test); only nodes it contains
                are returned, still in ring order.

        Raises:
            ConfigError: ``n < 1``.
            InputError: the key is bad.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"n(={n!r}) must be an int >= 1.")
        picked: list[str] = []
        for name in self.walk(key):
            if allowed is None or name in allowed:
                picked.append(name)
                if len(picked) == n:
                    break
        return picked

    # -- batch lookups -----------------------------------------------------------------

    def owners_batch(self, keys: Iterable[Key] | np.ndarray) -> np.ndarray:
        """Return the owner's node index for every key (map through :attr:`nodes`).

        Integer keys (a NumPy integer array or a list of ints) are hashed and looked up
        fully vectorised; string keys are hashed one by one, then looked up vectorised.

        Args:
            keys: the keys.

        Returns:
            An ``int32`` array of node indices, one per key, in input order.

        Raises:
            InputError: a key is bad; the message names the first bad value.

        Examples:
            >>> ring = HashRing(["a", "b"])
            >>> idx = ring.owners_batch(np.arange(1000))
            >>> ring.nodes[idx[7]] == ring.owner(7)
            True
        """
        return self.owners_of_hashes(hash_keys(keys))

    def owners_of_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """Like :meth:`owners_batch` for positions already computed with ``hash_keys``.

        Hash a key set once and evaluate many rings on it (planner sweeps, rebalance).
        """
        hashes = np.asarray(hashes, dtype=np.uint64)
        shift, table = self._bucket_table()
        owners = table[hashes >> np.uint64(shift)]
        mixed = np.flatnonzero(owners < 0)
        if mixed.size:
            owners[mixed] = self._point_node[self.positions_of_hashes(hashes[mixed])]
        return owners

    def _bucket_table(self) -> tuple[int, np.ndarray]:
        """Owner per top-bits bucket of the hash space, -1 where a bucket has two owners.

        Most buckets hold no owner change, so most keys are resolved by one gather
        instead of a binary search; built on first batch use (about 16 buckets per point).
        """
        if self._buckets is None:
            points, node = self._points, self._point_node
            bits = min(22, max(8, int(len(points) - 1).bit_length() + 4))
            shift = 64 - bits
            per_bucket = np.bincount(
                (points >> np.uint64(shift)).astype(np.intp), minlength=1 << bits
            )
            after = np.cumsum(per_bucket)  # index of the first point past each bucket
            first = after - per_bucket  # index of the first point in (or past) each bucket
            changes = np.concatenate(([0], np.cumsum(node != np.roll(node, -1))))
            uniform = changes[after] == changes[first]
            table = np.where(uniform, node[first % len(points)], -1).astype(np.int32)
            self._buckets = (shift, table)
        return self._buckets

    def positions_of_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """Return the index of the owning point (into the sorted points) for each hash."""
        pos = np.searchsorted(self._points, np.asarray(hashes, dtype=np.uint64), side="left")
        pos[pos == len(self._points)] = 0
        return pos

    @property
    def point_nodes(self) -> np.ndarray:
        """Read-only ``int32`` array: node index of each point, in ring order."""
        return self._point_node

    @property
    def points(self) -> np.ndarray:
        """Read-only ``uint64`` array: the points (hash positions) in ring order; a key
        hashing into ``(points[i - 1], points[i]]`` is owned by ``point_nodes[i]``."""
        return self._points

    def assign_bounded(self, keys: Iterable[Key] | np.ndarray, eps: float) -> BoundedAssignment:
        """Assign keys with consistent hashing with bounded loads (capacity ``1 + eps``).

        See :func:`geoshard.shards.bounded.assign_bounded`.
        """
        from geoshard.shards.bounded import assign_bounded

        return assign_bounded(self, keys, eps)
