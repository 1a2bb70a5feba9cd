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

Traffic management: :meth:`Router.entry_candidates` lists, nearest first, the healthy
regions that may process **every** data class a request touches and that the client can
reach; :meth:`Router.plan` is the one request planner that the simulator and the API
both call: entry region, the replica to use, the fallbacks and the reason.

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
from typing import Any, Literal

import numpy as np

from geoshard.errors import ConfigError, NoHealthyReplicaError, did_you_mean
from geoshard.keys import UserKey
from geoshard.regions.network import NetworkModel
from geoshard.regions.residency import ResidencyPolicy
from geoshard.shards import HashRing, ItemShardMap, Placement
from geoshard.spec import PERSONAL_CLASSES, Spec

__all__ = ["ALL_UP", "REQUEST_DATA_CLASSES", "Health", "Op", "RequestPlan", "Route", "Router"]

Op = Literal["read", "write"]


@dataclass(frozen=True)
class Health:
    """What is down or cut off, as the router currently believes it.

    Attributes:
        down_nodes: hot-tier nodes that are down (``eu-west/hot-1``).
        down_regions: regions that are down as a whole.
        partitions: pairs of regions that cannot reach each other (a network
            partition); each pair is a two-element frozenset.
    """

    down_nodes: frozenset[str] = frozenset()
    down_regions: frozenset[str] = frozenset()
    partitions: frozenset[frozenset[str]] = frozenset()

    @classmethod
    def of(cls, down: Iterable[str] = (), partitions: Iterable[Iterable[str]] = ()) -> Health:
        """Build from names: ``region/...`` names are nodes, other names are regions;
        ``partitions`` are pairs of regions that cannot reach each other."""
        items = list(down)
        cuts = frozenset(frozenset(p) for p in partitions)
        for pair in cuts:
            if len(pair) != 2:
                raise ConfigError(f"a partition names two different regions (got {sorted(pair)})")
        return cls(
            frozenset(d for d in items if "/" in d),
            frozenset(d for d in items if "/" not in d),
            cuts,
        )

    def is_up(self, node: str, region: str) -> bool:
        """True when neither the node nor its region is down."""
        return node not in self.down_nodes and region not in self.down_regions

    def is_cut(self, a: str, b: str) -> bool:
        """True when regions ``a`` and ``b`` (different) cannot reach each other."""
        return a != b and bool(self.partitions) and frozenset((a, b)) in self.partitions

    def __bool__(self) -> bool:  # Health() is "all up"; truthy when something is down or cut
        return bool(self.down_nodes or self.down_regions or self.partitions)


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


#: The personal data classes each request type touches where it is processed.
REQUEST_DATA_CLASSES: dict[str, tuple[str, ...]] = {
    "feature_read": ("user_features",),
    "recommend": ("user_features", "user_embeddings"),
    "interaction_write": ("interactions",),
}


@dataclass(frozen=True)
class RequestPlan:
    """The answer of :meth:`Router.plan`: where a request enters and which copy it uses.

    Attributes:
        client_region: where the client is.
        key: the user key.
        op: ``read`` or ``write``.
        data_classes: the personal data classes the request processes at its entry.
        entry: the entry (processing) region, or None when no region may serve it.
        node: the replica to use (a read: the nearest reachable copy; a write: the first
            reachable replica in ring order, the primary when all is well), or None.
        node_region: the region of ``node``.
        fallbacks: the other usable replicas, in the order to try them.
        reason: why: the failover taken, or why the request cannot be served.
    """

    client_region: str
    key: UserKey
    op: Op
    data_classes: tuple[str, ...]
    entry: str | None
    node: str | None
    node_region: str | None
    fallbacks: tuple[str, ...]
    reason: str

    @property
    def ok(self) -> bool:
        """True when the request has an entry region and a replica."""
        return self.entry is not None and self.node is not None


class Router:
    """Routes user keys to replicas and requests to regions. Pure; build once, call often.

    Args:
        spec: the topology.
        residency: defaults to the spec's policy.
        network: defaults to the spec's network model.
    """

    def __init__(
        self,
        spec: Spec,
        residency: ResidencyPolicy | None = None,
        network: NetworkModel | None = None,
    ) -> None:
        self.spec = spec
        self.residency = residency or ResidencyPolicy.from_spec(spec)
        self.network = network or NetworkModel.from_spec(spec)
        self.node_region: dict[str, str] = spec.hot_nodes()
        users = spec.shards.users
        weights = {n: users.weights.get(n, 1.0) for n in self.node_region}
        self.ring = HashRing(weights, vnodes=users.vnodes) if users.vnodes else HashRing(weights)
        self.placement = Placement(self.ring, self.node_region, regions=spec.regions)
        self.replication = users.replication
        items = spec.shards.items
        self.items = ItemShardMap(items.attribute, items.shards, items.default_shard)
        self._down_cache: dict[Health, frozenset[str]] = {}
        self._entry_cache: dict[tuple[str, str, tuple[str, ...], Health], tuple[str, ...]] = {}
        self._route_lists: dict[
            tuple[Any, ...],
            tuple[list[tuple[str, ...]], list[tuple[tuple[str, ...], tuple[str, ...]]]],
        ] = {}

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
                f" (known: {', '.join(self.spec.jurisdictions)})"
            )

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
    def route(
        self,
        key: UserKey | str,
        op: Op = "read",
        health: Health = ALL_UP,
        data_class: str = "user_features",
        near: str | None = None,
    ) -> Route:
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
            raise ConfigError(
                f"region '{near}' (near=) is not in the spec"
                f"{did_you_mean(str(near), self.spec.regions)}"
            )
        uk = self.parse_key(key)
        self._check_jurisdiction(uk)
        if data_class not in PERSONAL_CLASSES:
            raise ConfigError(
                f"data class '{data_class}' is not user data routed by the ring"
                f"{did_you_mean(data_class, PERSONAL_CLASSES)}; item data is "
                f"routed with Router.item_shard"
            )
        allowed = self.residency.allowed_regions(uk.jurisdiction, data_class, "store")
        preferred = self.placement.replicas(uk.user_id, self.replication, allowed)
        down = self._down_nodes(health)
        replicas = (
            preferred
            if not down or not down.intersection(preferred)
            else self.placement.replicas(uk.user_id, self.replication, allowed, down=down)
        )
        if not replicas:
            raise NoHealthyReplicaError(
                f"no healthy replica for '{uk}' ({data_class}): every node in the allowed "
                f"region(s) {', '.join(sorted(allowed))} is down; the router does not leave "
                f"the jurisdiction. Restore a node or region there"
            )
        skipped: list[tuple[str, str]] = []
        if down:
            for n in preferred:
                if n in down:
                    reg = self.node_region[n]
                    skipped.append(
                        (n, "region down" if reg in health.down_regions else "node down")
                    )
        if op == "read" and near is not None:
            replicas = self._nearest_first(near, replicas)
            preferred = self._nearest_first(near, preferred)
        return Route(
            uk,
            op,
            data_class,
            tuple(replicas),
            tuple(self.node_region[n] for n in replicas),
            tuple(sorted(allowed)),
            tuple(preferred),
            tuple(skipped),
        )

    def replicas_batch(
        self,
        jurisdiction: str,
        user_ids: Sequence[int] | np.ndarray,
        op: Op = "read",
        health: Health = ALL_UP,
        data_class: str = "user_features",
        near: str | None = None,
    ) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """``(route.replicas, route.regions)`` of :meth:`route` for many users of one jurisdiction.

        The same answers as calling :meth:`route` per key (same ordering rules for
        ``op`` and ``near``); see :meth:`route_codes` for the vectorised form.

        Raises:
            InputError: a bad user id.
            ConfigError: an unknown jurisdiction, data class or ``near`` region.
            NoHealthyReplicaError: no healthy node in any allowed region (then no key of
                the jurisdiction has a route).
        """
        codes, routes = self.route_codes(jurisdiction, user_ids, op, health, data_class, near)
        return [routes[c] for c in codes.tolist()]

    def route_codes(
        self,
        jurisdiction: str,
        user_ids: Sequence[int] | np.ndarray,
        op: Op = "read",
        health: Health = ALL_UP,
        data_class: str = "user_features",
        near: str | None = None,
    ) -> tuple[np.ndarray, list[tuple[tuple[str, ...], tuple[str, ...]]]]:
        """The routes of many users as codes: ``routes[codes[i]]`` is user ``i``'s
        ``(route.replicas, route.regions)`` (as :meth:`route` orders them).

        Vectorised from the hash to the code, for simulators and bulk tools that route
        millions of keys; ``routes`` is shared and only grows for the same arguments.

        Raises:
            InputError: a bad user id.
            ConfigError: an unknown jurisdiction, data class or ``near`` region.
            NoHealthyReplicaError: no healthy node in any allowed region.
        """
        if op not in ("read", "write"):
            raise ConfigError(f"op '{op}' is unknown; use 'read' or 'write'")
        if near is not None and near not in self.spec.regions:
            raise ConfigError(
                f"region '{near}' (near=) is not in the spec"
                f"{did_you_mean(str(near), self.spec.regions)}"
            )
        self._check_jurisdiction(UserKey(jurisdiction, 0))
        if data_class not in PERSONAL_CLASSES:
            raise ConfigError(
                f"data class '{data_class}' is not user data routed by the ring"
                f"{did_you_mean(data_class, PERSONAL_CLASSES)}"
            )
        ids = np.asarray(user_ids, dtype=np.int64)
        if ids.size and int(ids.min()) < 0:
            UserKey(jurisdiction, int(ids.min()))  # raises InputError naming the value
        allowed = self.residency.allowed_regions(jurisdiction, data_class, "store")
        down = self._down_nodes(health)
        codes, sets = self.placement.replica_codes(ids, self.replication, allowed, down)
        reorder = near if op == "read" else None
        key = (allowed, down, self.replication, reorder)
        held = self._route_lists.get(key)
        if held is None or held[0] is not sets:  # new, or the placement's memo was reset
            if len(self._route_lists) >= 1024:
                self._route_lists.clear()
            held = self._route_lists[key] = (sets, [])
        routes = held[1]
        region = self.node_region
        while len(routes) < len(sets):
            rp = sets[len(routes)]
            if not rp:
                raise NoHealthyReplicaError(
                    f"no healthy replica for {jurisdiction} {data_class}: every node in the "
                    f"allowed region(s) {', '.join(sorted(allowed))} is down; the router "
                    f"does not leave the jurisdiction. Restore a node or region there"
                )
            nodes = tuple(self._nearest_first(reorder, list(rp))) if reorder else rp
            routes.append((nodes, tuple(region[n] for n in nodes)))
        return codes, routes

    def _nearest_first(self, near: str, nodes: list[str]) -> list[str]:
        """``nodes`` by RTT from ``near`` (stable: equal RTTs keep their order)."""
        if len(nodes) < 2:
            return list(nodes)
        rtt, region = self.network.rtt_ms, self.node_region
        return sorted(nodes, key=lambda n: rtt(near, region[n]))

    def entry_candidates(
        self,
        client_region: str,
        jurisdiction: str,
        data_classes: Sequence[str] = ("user_features",),
        health: Health = ALL_UP,
    ) -> tuple[str, ...]:
        """Regions that may serve a request, nearest (by RTT from the client) first.

        A candidate may **process every one** of ``data_classes`` for ``jurisdiction``
        (the residency policy), is not down, and is not cut off from ``client_region`` by
        a partition. The first candidate is the entry region; the others are where an
        overloaded entry may spill. Memoised per (client, jurisdiction, classes, health).

        Raises:
            ConfigError: an unknown client region, jurisdiction or data class.
        """
        key = (client_region, jurisdiction, tuple(data_classes), health)
        hit = self._entry_cache.get(key)
        if hit is not None:
            return hit
        if client_region not in self.spec.regions:
            raise ConfigError(
                f"region '{client_region}' is not in the spec"
                f"{did_you_mean(client_region, self.spec.regions)}"
                f" (known: {', '.join(self.spec.regions)})"
            )
        self._check_jurisdiction(UserKey(jurisdiction, 0))
        allowed: set[str] | None = None
        for dc in data_classes:
            regs = self.residency.allowed_regions(jurisdiction, dc, "process")
            allowed = set(regs) if allowed is None else allowed & regs
        live = [
            r
            for r in sorted(allowed or ())
            if r not in health.down_regions and not health.is_cut(client_region, r)
        ]
        out = tuple(self.network.by_distance(client_region, live))
        if len(self._entry_cache) >= 4096:
            self._entry_cache.clear()
        self._entry_cache[key] = out
        return out

    def entry_region(
        self,
        client_region: str,
        key: UserKey | str,
        health: Health = ALL_UP,
        data_class: str | Sequence[str] = "user_features",
    ) -> str:
        """The nearest healthy, reachable region that may process the data.

        Args:
            client_region: where the client is.
            key: the user key.
            health: what is down or cut off.
            data_class: one data class, or every data class the request processes.

        Raises:
            ConfigError: an unknown client region.
            NoHealthyReplicaError: no region that may process the data is up and reachable.
        """
        uk = self.parse_key(key)
        classes = (data_class,) if isinstance(data_class, str) else tuple(data_class)
        cands = self.entry_candidates(client_region, uk.jurisdiction, classes, health)
        if not cands:
            raise NoHealthyReplicaError(
                self._no_entry_reason(client_region, uk.jurisdiction, classes, health)
            )
        return cands[0]

    def _no_entry_reason(
        self, client_region: str, jurisdiction: str, classes: Sequence[str], health: Health
    ) -> str:
        allowed: set[str] | None = None
        for dc in classes:
            regs = self.residency.allowed_regions(jurisdiction, dc, "process")
            allowed = set(regs) if allowed is None else allowed & regs
        what = " and ".join(classes)
        if not allowed:
            return (
                f"no region may process {jurisdiction} {what} together (residency "
                f"rules give no common region); the request is refused rather than "
                f"processed outside its jurisdiction"
            )
        states = []
        for r in sorted(allowed):
            states.append(
                f"{r} down" if r in health.down_regions else f"{r} cut off from {client_region}"
            )
        return (
            f"no healthy region may process {jurisdiction} {what} for a client in "
            f"{client_region}: {', '.join(states)}; requests fail or degrade rather than "
            f"leave the jurisdiction"
        )

    def pick_replica(
        self, nodes: Sequence[str], regions: Sequence[str], entry: str, health: Health = ALL_UP
    ) -> int | None:
        """Index of the first replica in ``nodes`` that ``entry`` can reach, or None.

        ``nodes`` are healthy replicas in the order to use them (from :meth:`route`); a
        replica in a region cut off from ``entry`` by a partition is skipped.
        """
        if not health.partitions:
            return 0 if nodes else None
        for i, r in enumerate(regions):
            if not health.is_cut(entry, r):
                return i
        return None

    def plan(
        self,
        client_region: str,
        key: UserKey | str,
        op: Op = "read",
        health: Health = ALL_UP,
        data_classes: Sequence[str] | None = None,
    ) -> RequestPlan:
        """The one request planner: entry region, replica, fallbacks and the reason.

        The entry is the nearest region that may process every one of ``data_classes``
        (default: ``user_features`` for a read, ``interactions`` for a write), is up and
        is reachable from the client. The replicas hold the first data class (a read's
        features; a write's interactions): a read uses the copy nearest the entry, a
        write the primary (the first healthy replica in ring order); replicas the entry
        cannot reach (partition) are skipped. Never raises for an unservable request: the
        plan says why (``ok`` is False).

        Args:
            client_region: where the client is.
            key: the user key (``UserKey`` or ``'eu:42'``).
            op: ``read`` or ``write``.
            health: what is down or cut off, as the router believes it.
            data_classes: the personal data classes the request processes.

        Raises:
            InputError: a malformed key.
            ConfigError: an unknown region, jurisdiction, data class or op.

        Examples:
            >>> router = Router.from_spec(load_spec("examples/local.yaml"))   # doctest: +SKIP
            >>> router.plan("eu-central", "eu:42").entry                      # doctest: +SKIP
            'eu-central'
        """
        uk = self.parse_key(key)
        if op not in ("read", "write"):
            raise ConfigError(f"op '{op}' is unknown; use 'read' or 'write'")
        classes = (
            tuple(data_classes)
            if data_classes
            else (("user_features",) if op == "read" else ("interactions",))
        )
        cands = self.entry_candidates(client_region, uk.jurisdiction, classes, health)
        if not cands:
            return RequestPlan(
                client_region,
                uk,
                op,
                classes,
                None,
                None,
                None,
                (),
                self._no_entry_reason(client_region, uk.jurisdiction, classes, health),
            )
        entry = cands[0]
        reasons = []
        if entry != client_region:
            reasons.append(
                f"entered in {entry}, the nearest region that may process "
                f"{' and '.join(classes)} and is reachable from {client_region}"
            )
        try:
            rt = self.route(uk, op, health, classes[0], near=entry)
        except NoHealthyReplicaError as exc:
            return RequestPlan(client_region, uk, op, classes, entry, None, None, (), str(exc))
        i = self.pick_replica(rt.replicas, rt.regions, entry, health)
        if i is None:
            return RequestPlan(
                client_region,
                uk,
                op,
                classes,
                entry,
                None,
                None,
                (),
                f"every healthy replica of {uk} ({', '.join(rt.replicas)}) is "
                f"cut off from {entry} by a partition",
            )
        node = rt.replicas[i]
        rest = tuple(
            n
            for k, n in enumerate(rt.replicas)
            if k != i and not health.is_cut(entry, rt.regions[k])
        )
        if i:
            reasons.append(f"{', '.join(rt.replicas[:i])} cut off from {entry}; using {node}")
        for n, why in rt.skipped:
            reasons.append(f"{n} skipped ({why})")
        if op == "write" and rt.failed_over and not rt.skipped:
            reasons.append(f"primary moved from {rt.preferred[0]}")
        return RequestPlan(
            client_region,
            uk,
            op,
            classes,
            entry,
            node,
            rt.regions[i],
            rest,
            "; ".join(reasons) or "all healthy",
        )

    def item_shard(self, attrs: dict[str, object]) -> str:
        """The item shard for an item's attributes (item data is not personal)."""
        return self.items.shard_for(attrs)
