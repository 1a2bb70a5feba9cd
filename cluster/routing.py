"""The Router: which replicas serve a key, and where a request enters.

``Router.route(key, op, health, near=...)`` returns the ordered replicas of a user's data:
primary first for writes, nearest to ``near`` (the entry region) first for reads. It is
pure: health is an argument, never a network call, so the simulator and
the running API call the very same object and get the very same answer.

How a route is chosen:

1. the key's jurisdiction and data class give the regions where the data may be stored
   (the residency policy);
2. the ring is walked from the key; nodes outside those regions, and nodes that are down
   (or whose region is down), are skipped; replicas go on distinct regions whenever
   enough exist (:class:`geoshard.shards.Placement`);
3. when no allowed node is healthy the router raises :class:`NoHealthyReplicaError`:
   it never routes outside the jurisdiction.

Traffic management: :meth:`Router.entry_region` sends a request to the nearest healthy
region that may process the data (by the network model's RTT).

Examples:
    >>> from geoshard.spec import load_spec
    >>> router = Router.from_spec(load_spec("examples/local.yaml"))   # doctest: +SKIP
    >>> router.route("eu:42").replicas                                 # doctest: +SKIP
    ('eu-central/hot-1', 'eu-west/hot-2')
    >>> router.route("eu:42", health=Health.of(down=["eu-central"])).replicas  # doctest: +SKIP
    ('eu-west/hot-2', 'eu-west/hot-0')
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from geoshard.errors import ConfigError, NoHealthyReplicaError, did_you_mean
from geoshard.keys import UserKey
from geoshard.regions.network import NetworkModel
from geoshard.regions.residency import ResidencyPolicy
from geoshard.shards import HashRing, ItemShardMap, Placement
from geoshard.spec import PERSONAL_CLASSES, Spec

__all__ = ["Health", "Op", "Route", "Router"]

Op = Literal["read", "write"]


@dataclass(frozen=True)
class Health:
    """What is down, as the router currently believes it.

    Attributes:
        down_nodes: hot-tier nodes that are down (``eu-west/hot-1``).
        down_regions: regions that are down as a whole.
    """

    down_nodes: frozenset[str] = frozenset()
    down_regions: frozenset[str] = frozenset()

    @classmethod
    def of(cls, down: Iterable[str] = ()) -> Health:
        """Build from names: ``region/...`` names are nodes, other names are regions."""
        items = list(down)
        return cls(frozenset(d for d in items if "/" in d), frozenset(d for d in items if "/" not in d))

    def is_up(self, node: str, region: str) -> bool:
        """True when neither the node nor its region is down."""
        return node not in self.down_nodes and region not in self.down_regions

    def __bool__(self) -> bool:  # Health() is "all up"; truthy when something is down
        return bool(self.down_nodes or self.down_regions)


ALL_UP = Health()


@dataclass(frozen=True)
class Route:
    """The answer of :meth:`Router.route`.

    Attributes:
        key: the user key.
        op: read or write.
        data_class: the data class routed.
        replicas: node names in the order to use them (all in allowed regions, all
            healthy): primary first for writes; nearest first for reads given ``near``.
        regions: the region of each replica.
        allowed_regions: where this data may be stored.
        preferred: the replicas when everything is up (to show failover).
        skipped: ``(node, reason)`` for every node of the preferred walk that was passed over.
    """

    key: UserKey
    op: Op
    data_class: str
    replicas: tuple[str, ...]
    regions: tuple[str, ...]
    allowed_regions: tuple[str, ...]
    preferred: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = field(default=())

    @property
    def primary(self) -> str:
        """The first replica: the primary for a write, the one to read for a read."""
        return self.replicas[0]

    @property
    def failed_over(self) -> bool:
        """True when the primary is not the one it would be with everything up."""
        return self.replicas[:1] != self.preferred[:1]


class Router:
    """Routes user keys to replicas and requests to regions. Pure; build once, call often.

    Args:
        spec: the topology.
        residency: defaults to the spec's policy.
        network: defaults to the spec's network model.
    """

    def __init__(self, spec: Spec, residency: ResidencyPolicy | None = None,
                 network: NetworkModel | None = None) -> None:
        self.spec = spec
        self.residency = residency or ResidencyPolicy.from_spec(spec)
        self.network = network or NetworkModel.from_spec(spec)
        self.node_region: dict[str, str] = spec.hot_nodes()
        users = spec.shards.users
        weights = {n: users.weights.get(n, 1.0) for n in self.node_region}
        self.ring = (HashRing(weights, vnodes=users.vnodes) if users.vnodes
                     else HashRing(weights))
        self.placement = Placement(self.ring, self.node_region, regions=spec.regions)
        self.replication = users.replication
        items = spec.shards.items
        self.items = ItemShardMap(items.attribute, items.shards, items.default_shard)
        self._down_cache: dict[Health, frozenset[str]] = {}

    @classmethod
    def from_spec(cls, spec: Spec) -> Router:
        """The router of a spec, with its residency policy and network model."""
        return cls(spec)

    # ------------------------------------------------------------------ keys
    @staticmethod
    def parse_key(key: UserKey | str) -> UserKey:
        """Accept a :class:`UserKey` or its text form ``'eu:42'``."""
        return key if isinstance(key, UserKey) else UserKey.parse(key)

    def _check_jurisdiction(self, key: UserKey) -> None:
        if key.jurisdiction not in self.spec.jurisdictions:
            raise ConfigError(
                f"user key '{key}' names jurisdiction '{key.jurisdiction}', which is not in the spec"
                f"{did_you_mean(key.jurisdiction, self.spec.jurisdictions)}"
                f" (known: {', '.join(self.spec.jurisdictions)})")

    def _down_nodes(self, health: Health) -> frozenset[str]:
        """Nodes that are down under ``health`` (memoised: health changes rarely)."""
        if not health:
            return frozenset()
        down = self._down_cache.get(health)
        if down is None:
            down = frozenset(n for n, r in self.node_region.items() if not health.is_up(n, r))
            if len(self._down_cache) >= 256:
                self._down_cache.clear()
            self._down_cache[health] = down
        return down

    # ------------------------------------------------------------------ routing
    def route(self, key: UserKey | str, op: Op = "read", health: Health = ALL_UP,
              data_class: str = "user_features", near: str | None = None) -> Route:
        """The ordered replicas for ``key``'s ``data_class``: the one to use first.

        Both operations get the same replica set (the ring places the R replicas on
        distinct allowed regions, so each allowed region holds a copy whenever enough
        exist). The order depends on the operation:

        * ``op="write"``: primary first, then the other replicas in ring order (a write
          goes to the primary, which replicates to the others); ``near`` is ignored.
        * ``op="read"`` with ``near`` (a region name, usually the entry region): the
          replicas sorted by RTT from ``near``, stable (equal RTTs keep ring order), so
          ``replicas[0]`` is the nearest copy, the one to read. ``preferred`` is
          ordered the same way, so :attr:`Route.failed_over` still means "the replica
          to use is not the one it would be with everything up".
        * ``op="read"`` without ``near``: ring order, primary first (as a write).

        Args:
            key: a user key (``UserKey`` or ``'eu:42'``).
            op: ``read`` or ``write``.
            health: what is down; only healthy nodes are returned.
            data_class: a personal data class (``user_features`` by default).
            near: for reads, order the replicas by RTT from this region.

        Raises:
            InputError: a malformed key.
            ConfigError: an unknown jurisdiction, data class or ``near`` region.
            NoHealthyReplicaError: no healthy node in any allowed region.

        Examples:
            >>> router = Router.from_spec(load_spec("examples/local.yaml"))   # doctest: +SKIP
            >>> router.route("eu:42", "read", near="eu-central").regions[0]  # doctest: +SKIP
            'eu-central'
        """
        if op not in ("read", "write"):
            raise ConfigError(f"op '{op}' is unknown; use 'read' or 'write'")
        if near is not None and near not in self.spec.regions:
            raise ConfigError(f"region '{near}' (near=) is not in the spec"
                              f"{did_you_mean(str(near), self.spec.regions)}")
        uk = self.parse_key(key)
        self._check_jurisdiction(uk)
        if data_class not in PERSONAL_CLASSES:
            raise ConfigError(f"data class '{data_class}' is not user data routed by the ring"
                              f"{did_you_mean(data_class, PERSONAL_CLASSES)}; item data is "
                              f"routed with Router.item_shard")
        allowed = self.residency.allowed_regions(uk.jurisdiction, data_class, "store")
        preferred = self.placement.replicas(uk.user_id, self.replication, allowed)
        down = self._down_nodes(health)
        replicas = (preferred if not down or not down.intersection(preferred)
                    else self.placement.replicas(uk.user_id, self.replication, allowed, down=down))
        if not replicas:
            raise NoHealthyReplicaError(
                f"no healthy replica for '{uk}' ({data_class}): every node in the allowed "
                f"region(s) {', '.join(sorted(allowed))} is down; the router does not leave "
                f"the jurisdiction. Restore a node or region there")
        skipped: list[tuple[str, str]] = []
        if down:
            for n in preferred:
                if n in down:
                    reg = self.node_region[n]
                    skipped.append((n, "region down" if reg in health.down_regions else "node down"))
        if op == "read" and near is not None:
            replicas = self._nearest_first(near, replicas)
            preferred = self._nearest_first(near, preferred)
        return Route(uk, op, data_class, tuple(replicas),
                     tuple(self.node_region[n] for n in replicas),
                     tuple(sorted(allowed)), tuple(preferred), tuple(skipped))

    def replicas_batch(self, jurisdiction: str, user_ids: Sequence[int] | np.ndarray,
                       op: Op = "read", health: Health = ALL_UP,
                       data_class: str = "user_features", near: str | None = None,
                       ) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """``(route.replicas, route.regions)`` of :meth:`route` for many users of one jurisdiction.

        The same answers as calling :meth:`route` per key (same ordering rules for
        ``op`` and ``near``), hashed and looked up vectorised; for simulators and bulk
        tools that route millions of keys.

        Raises:
            InputError: a bad user id.
            ConfigError: an unknown jurisdiction, data class or ``near`` region.
            NoHealthyReplicaError: no healthy node in any allowed region (then no key of
                the jurisdiction has a route).
        """
        if op not in ("read", "write"):
            raise ConfigError(f"op '{op}' is unknown; use 'read' or 'write'")
        if near is not None and near not in self.spec.regions:
            raise ConfigError(f"region '{near}' (near=) is not in the spec"
                              f"{did_you_mean(str(near), self.spec.regions)}")
        self._check_jurisdiction(UserKey(jurisdiction, 0))
        if data_class not in PERSONAL_CLASSES:
            raise ConfigError(f"data class '{data_class}' is not user data routed by the ring"
                              f"{did_you_mean(data_class, PERSONAL_CLASSES)}")
        ids = np.asarray(user_ids, dtype=np.int64)
        if ids.size and int(ids.min()) < 0:
            UserKey(jurisdiction, int(ids.min()))  # raises InputError naming the value
        allowed = self.residency.allowed_regions(jurisdiction, data_class, "store")
        reps = self.placement.replicas_batch(ids, self.replication, allowed)
        down = self._down_nodes(health)
        if down:
            bad = [i for i, rp in enumerate(reps) if down.intersection(rp)]
            if bad:
                fixed = self.placement.replicas_batch(ids[bad], self.replication, allowed, down)
                for i, rp in zip(bad, fixed):
                    reps[i] = rp
        memo: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}
        out = []
        reorder = op == "read" and near is not None
        region = self.node_region
        for rp in reps:
            v = memo.get(rp)
            if v is None:
                if not rp:
                    raise NoHealthyReplicaError(
                        f"no healthy replica for {jurisdiction} {data_class}: every node in the "
                        f"allowed region(s) {', '.join(sorted(allowed))} is down; the router "
                        f"does not leave the jurisdiction. Restore a node or region there")
                nodes = tuple(self._nearest_first(near, list(rp))) if reorder else rp  # type: ignore[arg-type]
                v = memo[rp] = (nodes, tuple(region[n] for n in nodes))
            out.append(v)
        return out

    def _nearest_first(self, near: str, nodes: list[str]) -> list[str]:
        """``nodes`` by RTT from ``near`` (stable: equal RTTs keep their order)."""
        if len(nodes) < 2:
            return list(nodes)
        rtt, region = self.network.rtt_ms, self.node_region
        return sorted(nodes, key=lambda n: rtt(near, region[n]))

    def entry_region(self, client_region: str, key: UserKey | str, health: Health = ALL_UP,
                     data_class: str = "user_features") -> str:
        """The nearest healthy region (by RTT from ``client_region``) that may process the data.

        Raises:
            ConfigError: an unknown client region.
            NoHealthyReplicaError: every region that may process the data is down.
        """
        if client_region not in self.spec.regions:
            raise ConfigError(f"region '{client_region}' is not in the spec"
                              f"{did_you_mean(client_region, self.spec.regions)}")
        uk = self.parse_key(key)
        self._check_jurisdiction(uk)
        allowed = self.residency.allowed_regions(uk.jurisdiction, data_class, "process")
        live = [r for r in allowed if r not in health.down_regions]
        best = self.network.nearest(client_region, live)
        if best is None:
            raise NoHealthyReplicaError(
                f"no healthy region may process {uk.jurisdiction} {data_class}: "
                f"{', '.join(sorted(allowed))} all down; requests fail or degrade rather than "
                f"leave the jurisdiction")
        return best

    def item_shard(self, attrs: dict[str, object]) -> str:
        """The item shard for an item's attributes (item data is not personal)."""
        return self.items.shard_for(attrs)
