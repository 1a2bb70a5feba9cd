"""One region's request path: planned by the shared Router, read through the shared cache
walk, written to the ring primary and replicated through the fault proxy.

:class:`RegionService` is what an API process of region ``r`` runs (the FastAPI layer in
:mod:`geoshard.cluster.api` only parses, authenticates and maps errors):

* **planning**: every request is planned by :meth:`Router.plan
  <geoshard.cluster.routing.Router.plan>` with the :class:`Health` the health monitor
  keeps (:meth:`RegionService.plan`): the entry region that may process every data
  class the request touches, the replica, the fallbacks. A request whose entry is
  another region is forwarded there through the proxy; a request pinned to a region
  (``?region=``) that may not process the data is refused (403) with the residency
  policy's explanation, never served.
* **reads**: :class:`~geoshard.storage.caches.ReadThroughCache` over the levels
  :func:`~geoshard.storage.caches.build_cache_levels` builds from the spec (L1 in this
  process, L2 and regional in the region's cache servers): the very cache walk the
  simulator runs (lookup order, fill above, residency admit). On a miss everywhere the
  loader reads the replica the plan chose: this region's tiers (hot, then cold with
  promotion: :class:`~geoshard.storage.tiering.TierManager`) or, through the proxy,
  another replica region's; failing over along the plan's fallbacks.
* **writes**: to the plan's node (the ring primary, or the next healthy replica while
  it is down), durably (``WAIT``) and into the primary region's write log, from which
  the region worker ships the write to the key's other replica regions (asynchronously;
  synchronously too for ``storage.replication.sync_classes``); then the cache walk
  invalidates the key.
* **ingestion**: interactions go to their primary region's ingestion buffer
  (:mod:`geoshard.cluster.ingest`), acknowledged when durable in its write log.

Examples:
    >>> svc = RegionService(spec, state, "eu-west", token)     # doctest: +SKIP
    >>> svc.start(); svc.read(DataKey("item_catalog", "sku-1"))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoshard.cluster import metrics as m
from geoshard.cluster.access import AccessTracker
from geoshard.cluster.envelope import ABSENT, new_version, unwrap, wrap
from geoshard.cluster.health import HealthMonitor
from geoshard.cluster.ingest import (
    BufferFullError,
    IngestBuffer,
    Interaction,
    interaction_history,
)
from geoshard.cluster.itemindex import ItemIndex, current_version
from geoshard.cluster.peers import PeerClient
from geoshard.cluster.pipeline import RecommendPipeline, RecommendResult
from geoshard.cluster.regionlog import RegionLog
from geoshard.cluster.routing import ALL_UP, REQUEST_DATA_CLASSES, Health, RequestPlan, Router
from geoshard.cluster.state import DeploymentState
from geoshard.cluster.stores import open_region
from geoshard.errors import (
    BackendUnavailableError,
    ConfigError,
    GeoshardError,
    InputError,
    NoHealthyReplicaError,
    ResidencyError,
    did_you_mean,
)
from geoshard.keys import DataKey, UserKey
from geoshard.spec import Spec
from geoshard.storage.caches import ReadThroughCache, build_cache_levels
from geoshard.storage.keylayout import key_text, parse_key_text
from geoshard.storage.tiering import TieringPolicy, TierManager, decode_embedding

__all__ = [
    "RegionService",
    "RequestRefused",
    "WriteResult",
    "ingest_targets",
    "parse_user",
    "refusal_of",
]

#: How many interactions of a user the history endpoint returns at most.
HISTORY_LIMIT = 1000


class RequestRefused(GeoshardError):
    """A request the API answers with an error status (not a crash).

    Attributes:
        status: the HTTP status.
        code: a short machine-readable code (``residency``, ``no_region``, ...).
        headers: extra response headers (``Retry-After``).
        extra: more fields for the JSON body.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}


@dataclass(frozen=True)
class WriteResult:
    """Where a write landed."""

    version: int
    region: str
    failed_over: bool
    reason: str


def ingest_targets(router: Router, user: UserKey, region: str) -> tuple[str, ...]:
    """The regions an interaction written in ``region`` is shipped to: the other replica
    regions of the user's interactions, as placed with every node up."""
    rt = router.route(user, "write", ALL_UP, "interactions")
    return tuple(r for r in dict.fromkeys(rt.regions) if r != region)


class RegionService:
    """The request path of one region, in one API process.

    Args:
        spec: the deployment's spec.
        state: the recorded deployment (addresses).
        region: this process's region.
        token: the deployment's bearer token (calls to other regions carry it).
        items_root: where the region worker exports the item snapshot.
    """

    def __init__(
        self,
        spec: Spec,
        state: DeploymentState,
        region: str,
        token: str,
        *,
        items_root: Path | None = None,
    ) -> None:
        if region not in state.regions:
            raise ConfigError(
                f"region '{region}' is not in the deployment{did_you_mean(region, state.regions)}"
            )
        self.spec = spec
        self.region = region
        self.router = Router.from_spec(spec)
        self.residency = self.router.residency
        self.stores = open_region(spec, state, region, residency=self.residency)
        self.levels = build_cache_levels(
            spec.caches, region=region, residency=self.residency, stores=self.stores.caches
        )
        self.reader = ReadThroughCache(self.levels, loader=self._load, writer=self._write_tier)
        t = spec.deploy.tiering
        self.tiers = TierManager(
            self.stores.hot,
            self.stores.cold,
            policy=TieringPolicy(
                max_idle_s=t.max_idle_s, hot_ttl_s=t.hot_ttl_s, batch_size=t.batch_size
            ),
        )
        h = spec.storage.hot
        self.log = RegionLog(
            self.stores.hot,
            region,
            wait_replicas=h.wait_replicas if h.durable_writes else 0,
            wait_timeout_ms=h.wait_timeout_ms,
        )
        assert state.proxy is not None
        self.peers = PeerClient(
            region, {lk.dst: lk.port for lk in state.proxy.links if lk.src == region}, token
        )
        self.health_monitor = HealthMonitor(
            region,
            list(spec.regions),
            self.log.ping,
            self.peers,
            interval_s=spec.deploy.health_interval_s,
        )
        ing = spec.deploy.ingest
        self.ingest_buffer = IngestBuffer(
            self.log,
            capacity=ing.buffer_items,
            flush_batch=ing.flush_batch,
            retry_after_s=ing.retry_after_s,
        )
        self.access = AccessTracker(self.log)
        self.items_root = items_root or Path(state.regions[region].dir) / "items"
        self._index = ItemIndex.empty(list(self.router.items.shards), spec.storage.vector.dim)
        self._index_version: str | None = None
        ann = None
        if spec.deploy.recall == "milvus":
            self.stores.vector = open_region(
                spec, state, region, residency=self.residency, vector=True, caches=False
            ).vector
            ann = self._milvus_recall
        self.pipeline = RecommendPipeline(spec, region, lambda: self._index, ann=ann)
        self._written = threading.local()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._synced: dict[str, float] = {}
        self._plan_memo: dict[tuple[Any, ...], RequestPlan] = {}
        self._plan_health: Health | None = None
        self.started_s = time.time()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the health monitor, the ingestion flusher, the access flusher and the
        background refresh (item snapshot, metrics)."""
        self.reload_items()
        self.health_monitor.start()
        self.ingest_buffer.start()
        self.access.start()
        th = threading.Thread(target=self._background, name="refresh", daemon=True)
        th.start()
        self._threads.append(th)

    def close(self) -> None:
        """Stop the threads (flushing what is admitted) and close the stores."""
        self._stop.set()
        self.ingest_buffer.stop()
        self.access.stop()
        self.health_monitor.stop()
        for th in self._threads:
            th.join(timeout=5)
        self.peers.close()
        self.stores.close()

    def _background(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(GeoshardError, OSError):
                self.reload_items()
            self.sync_metrics()

    def reload_items(self) -> bool:
        """Load the item snapshot the worker exported, when it changed; True if it did."""
        version = current_version(self.items_root)
        if version is None or version == self._index_version:
            return False
        idx = ItemIndex.load(self.items_root)
        if idx is not None:
            self._index, self._index_version = idx, idx.version
        return True

    @property
    def index(self) -> ItemIndex:
        """The live item snapshot."""
        return self._index

    def sync_metrics(self) -> None:
        """Publish the cache walk's counters and the ingestion depth to the metrics."""
        st = self.reader.stats
        names = [c.name for c in self.reader.levels]
        for i, name in enumerate(names):
            for key, total, metric in (
                (f"l{name}", st.lookups[i], m.CACHE_LOOKUPS),
                (f"h{name}", st.hits[i], m.CACHE_HITS),
                (f"r{name}", self.reader.refusals[i], None),
            ):
                delta = total - self._synced.get(key, 0)
                if delta > 0:
                    if metric is not None:
                        metric.labels(self.region, name).inc(delta)
                    else:
                        m.RESIDENCY_REFUSALS.labels(self.region, f"cache_fill_{name}").inc(delta)
                    self._synced[key] = total
        m.INGEST_DEPTH.labels(self.region).set(self.ingest_buffer.depth)

    @property
    def health(self) -> Health:
        """The router's current view of the deployment (from the health monitor)."""
        return self.health_monitor.health

    # ------------------------------------------------------------------ planning
    def check_region(self, name: str, field: str) -> str:
        """``name`` when it is a region of the spec.

        Raises:
            RequestRefused: 400 naming the field, with the closest region.
        """
        if name not in self.spec.regions:
            raise RequestRefused(
                400,
                "unknown_region",
                f"{field}: region '{name}' is not in the spec{did_you_mean(name, self.spec.regions)}"
                f" (known: {', '.join(self.spec.regions)})",
                extra={"field": field},
            )
        return name

    def check_jurisdiction(self, user: UserKey, field: str) -> None:
        """Refuse a user key of a jurisdiction the spec does not have (400)."""
        if user.jurisdiction not in self.spec.jurisdictions:
            raise RequestRefused(
                400,
                "unknown_jurisdiction",
                f"{field}: user key '{user}' names jurisdiction '{user.jurisdiction}', which is "
                f"not in the spec{did_you_mean(user.jurisdiction, self.spec.jurisdictions)} "
                f"(known: {', '.join(self.spec.jurisdictions)}); use '<jurisdiction>:<id>'",
                extra={"field": field},
            )

    def plan(
        self,
        request_type: str,
        user: UserKey,
        op: str,
        *,
        client_region: str,
        pin: str | None = None,
        forwarded: bool = False,
        classes: Sequence[str] | None = None,
    ) -> RequestPlan:
        """Plan a request with the shared planner and decide where it is processed.

        Args:
            request_type: ``feature_read``, ``feature_write``, ``recommend``,
                ``interaction_write`` or ``interaction_read``.
            user: the user.
            op: ``read`` or ``write``.
            client_region: where the client is (this region unless a forwarder says).
            pin: the region the client asks to process the request in (``?region=``).
            forwarded: the request was forwarded here by another region already.
            classes: the data classes processed (default from the request type).

        Returns:
            The plan; ``plan.entry`` is where to process it (this region or another).

        Raises:
            RequestRefused: 403 when residency forbids every way to serve it, 503 when no
                allowed region is healthy and reachable now.
        """
        self.check_jurisdiction(user, "user_id")
        dcs = tuple(classes or _CLASSES[request_type])
        health = self.health
        if pin is not None:
            for dc in dcs:
                if not self.residency.is_allowed(user.jurisdiction, dc, pin, "process"):
                    m.RESIDENCY_REFUSALS.labels(self.region, "request").inc()
                    allowed = sorted(
                        self.residency.allowed_regions(user.jurisdiction, dc, "process")
                    )
                    raise RequestRefused(
                        403,
                        "residency",
                        f"residency: {user.jurisdiction} {dc} may not be processed in '{pin}' "
                        f"(region=); allowed: {', '.join(allowed)}. The request was refused and "
                        f"nothing was read or written; drop region= or pick an allowed region",
                        extra={"field": "region", "allowed_regions": allowed},
                    )
            client_region = pin
        plan = self._router_plan(client_region, user, op, health, dcs)
        if pin is not None and plan.entry != pin:
            raise RequestRefused(
                503,
                "region_unavailable",
                f"region '{pin}' (region=) cannot serve {user} now: "
                f"{plan.reason}; retry, or drop region=",
                headers={"Retry-After": "1"},
            )
        if plan.entry is None:
            possible = set(self.spec.regions)
            for dc in dcs:
                possible &= set(self.residency.allowed_regions(user.jurisdiction, dc, "process"))
            if not possible:
                m.RESIDENCY_REFUSALS.labels(self.region, "request").inc()
                raise RequestRefused(403, "residency", plan.reason)
            raise RequestRefused(503, "no_region", plan.reason, headers={"Retry-After": "1"})
        if forwarded and plan.entry != self.region:
            # forwarded here already: process here when allowed (views of health differ)
            if all(
                self.residency.is_allowed(user.jurisdiction, dc, self.region, "process")
                for dc in dcs
            ):
                return self._router_plan(self.region, user, op, health, dcs)
            raise RequestRefused(
                503,
                "no_region",
                f"{self.region} may not process {user}'s "
                f"{' and '.join(dcs)} and the request was forwarded once already; "
                f"retry",
                headers={"Retry-After": "1"},
            )
        return plan

    def _router_plan(
        self, client_region: str, user: UserKey, op: str, health: Health, classes: Sequence[str]
    ) -> RequestPlan:
        """:meth:`Router.plan`, memoised while the health view stays the same object (the
        plan is a pure function of these inputs, so the memo gives the very same answer)."""
        if health is not self._plan_health:
            self._plan_memo = {}
            self._plan_health = health
        key = (client_region, user, op, tuple(classes))
        plan = self._plan_memo.get(key)
        if plan is None:
            plan = self.router.plan(client_region, user, op, health, classes)  # type: ignore[arg-type]
            if len(self._plan_memo) >= 200_000:
                self._plan_memo = {}
            self._plan_memo[key] = plan
        return plan

    # ------------------------------------------------------------------ reads
    def read(self, key: DataKey) -> bytes | None:
        """``key``'s value through the cache walk (the envelope removed), or None."""
        value = self.reader.get(key)
        self.access.touch(key_text(key))
        return None if value is None or value == ABSENT else unwrap(value)[1]

    def _load(self, key: DataKey) -> bytes:
        """The loader of the cache walk: the plan's replica, then its fallbacks; a key no
        tier has loads as :data:`~geoshard.cluster.envelope.ABSENT`, so the walk caches
        its absence too."""
        value = self._load_value(key)
        return ABSENT if value is None else value

    def _load_value(self, key: DataKey) -> bytes | None:
        if key.jurisdiction is None:
            return self.read_local_tier(key)
        assert isinstance(key.owner, UserKey)
        plan = self._router_plan(self.region, key.owner, "read", self.health, (key.data_class,))
        if plan.node is None:
            raise NoHealthyReplicaError(plan.reason)
        errors = []
        for node in (plan.node, *plan.fallbacks):
            r = self.router.node_region[node]
            try:
                if r == self.region:
                    return self.read_local_tier(key)
                status, body, _ = self.peers.call(
                    r, "GET", f"/internal/v1/kv/{key_text(key)}", timeout_s=1.0
                )
                if status == 404:
                    return None
                if status != 200:
                    raise BackendUnavailableError(f"{r} answered {status}: {body[:200]!r}")
                return body
            except BackendUnavailableError as exc:
                errors.append(str(exc))
        raise BackendUnavailableError(f"no replica of {key} answered: {'; '.join(errors)}")

    def read_local_tier(self, key: DataKey) -> bytes | None:
        """``key`` from this region's tiers: hot, else cold (promoted to hot on a hit).

        Raises:
            ResidencyError: this region may not hold ``key``.
        """
        if key.jurisdiction is not None and not self.residency.is_allowed(
            key.jurisdiction, key.data_class, self.region, "store"
        ):
            self.residency.check(key.jurisdiction, key.data_class, self.region, "store")
        value = self.stores.hot.get(key)
        if value is not None:
            m.TIER_OPS.labels(self.region, "hot", "read").inc()
            return value
        value = self.tiers.get(key, now_s=time.time())
        m.TIER_OPS.labels(self.region, "cold", "read").inc()
        if value is not None:
            m.TIER_OPS.labels(self.region, "hot", "promote").inc()
            self.access.touch(key_text(key))
        return value

    # ------------------------------------------------------------------ writes
    def write(self, key: DataKey, payload: bytes) -> WriteResult:
        """Write ``payload`` for ``key`` at its primary (or failover) replica, then
        invalidate the key in the cache levels (the cache walk's ``write_through``).

        Raises:
            NoHealthyReplicaError: no replica may take the write now.
            BackendUnavailableError: every replica the plan allows failed.
        """
        self._written.result = None
        self.reader.write_through(key, payload)
        result: WriteResult = self._written.result
        self.access.touch(key_text(key))
        return result

    def _write_tier(self, key: DataKey, payload: bytes) -> None:
        assert isinstance(key.owner, UserKey)
        plan = self._router_plan(self.region, key.owner, "write", self.health, (key.data_class,))
        if plan.node is None:
            raise NoHealthyReplicaError(plan.reason)
        errors: list[str] = []
        order = (plan.node, *plan.fallbacks)
        for i, node in enumerate(order):
            r = self.router.node_region[node]
            try:
                if r == self.region:
                    version = self.apply_primary(key, payload)
                else:
                    status, data = self.peers.call_json(
                        r,
                        "POST",
                        "/internal/v1/write",
                        {"key": key_text(key), "value": base64.b64encode(payload).decode()},
                        timeout_s=max(2.0, self.spec.storage.hot.retry_budget_s + 1),
                    )
                    if status != 200:
                        raise BackendUnavailableError(f"{r} refused the write ({status}): {data}")
                    version = int(data["version"])
                why = plan.reason if not i else f"{plan.reason}; {', '.join(errors)}"
                self._written.result = WriteResult(
                    version, r, bool(i) or plan.reason != "all healthy", why
                )
                return
            except BackendUnavailableError as exc:
                errors.append(f"{node} failed: {exc}")
        raise BackendUnavailableError(f"no replica of {key} took the write: {'; '.join(errors)}")

    def _store_targets(self, key: DataKey) -> list[str]:
        assert key.jurisdiction is not None
        allowed = self.residency.allowed_regions(key.jurisdiction, key.data_class, "store")
        return sorted(r for r in allowed if r != self.region)

    def apply_primary(self, key: DataKey, payload: bytes) -> int:
        """Take a write as the key's primary (or failover) replica: the hot tier
        (durable, WAIT), then the write log that ships it to the other replica regions.

        Returns:
            The version given to the write.

        Raises:
            ResidencyError: this region may not store ``key`` (nothing written).
        """
        version = new_version()
        value = wrap(version, payload)
        self.stores.hot.put(key, value)  # residency guard, then SET + WAIT
        m.TIER_OPS.labels(self.region, "hot", "write").inc()
        targets = self._store_targets(key)
        entry: dict[str, str | bytes] = {
            "kind": "put",
            "key": key_text(key),
            "value": value,
            "targets": ",".join(targets),
        }
        self.log.append([entry], durable=True)
        self.reader.invalidate(key)
        if key.data_class in self.spec.storage.replication.sync_classes:
            self._replicate_now(entry, targets)
        return version

    def _replicate_now(self, entry: dict[str, str | bytes], targets: Sequence[str]) -> None:
        value = entry["value"]
        assert isinstance(value, bytes)
        body = [
            {"kind": entry["kind"], "key": entry["key"], "value": base64.b64encode(value).decode()}
        ]
        for r in targets:
            with contextlib.suppress(
                BackendUnavailableError
            ):  # unreachable: the log ships it later
                self.peers.call_json(
                    r, "POST", "/internal/v1/replicate", {"entries": body}, timeout_s=2.0
                )

    def is_replica(self, key: DataKey) -> bool:
        """True when this region holds a ring replica of ``key`` (placement, all up)."""
        assert isinstance(key.owner, UserKey)
        rt = self.router.route(key.owner, "write", ALL_UP, key.data_class)
        return self.region in rt.regions

    def apply_replicated(self, entries: Sequence[dict[str, Any]]) -> int:
        """Apply writes shipped from another region (newest version wins); interactions
        go into this region's write log (its worker drains them). Idempotent.

        Raises:
            InputError: a malformed entry (nothing applied).
            ResidencyError: an entry this region may not store (nothing applied).
        """
        parsed: list[tuple[str, DataKey, bytes]] = []
        for i, e in enumerate(entries):
            try:
                kind = e["kind"]
                key = parse_key_text(e["key"])
                value = base64.b64decode(e["value"], validate=True)
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"entries[{i}] is malformed: {exc}") from None
            if kind not in ("put", "interaction"):
                raise InputError(f"entries[{i}].kind {kind!r} is unknown; use put or interaction")
            if key.jurisdiction is None:
                raise InputError(f"entries[{i}].key {e['key']!r} is not personal data")
            if not self.residency.is_allowed(
                key.jurisdiction, key.data_class, self.region, "store"
            ):
                m.RESIDENCY_REFUSALS.labels(self.region, "replication").inc()
                self.residency.check(key.jurisdiction, key.data_class, self.region, "store")
            parsed.append((kind, key, value))
        log_entries: list[dict[str, str | bytes]] = []
        applied = 0
        for kind, key, value in parsed:
            if kind == "interaction":
                log_entries.append(
                    {"kind": "interaction", "key": key_text(key), "value": value, "targets": ""}
                )
                continue
            if self.is_replica(key):
                cur = self.stores.hot.get(key)
                if cur is None or unwrap(cur)[0] < unwrap(value)[0]:
                    self.stores.hot.put(key, value)
                    m.TIER_OPS.labels(self.region, "hot", "write").inc()
                    applied += 1
            self.reader.invalidate(key)
        if log_entries:
            self.log.append(log_entries, durable=True)
            applied += len(log_entries)
        return applied

    # ------------------------------------------------------------------ features and items
    def features(self, user: UserKey) -> dict[str, Any] | None:
        """The user's features document, or None."""
        raw = self.read(DataKey("user_features", user))
        return None if raw is None else dict(json.loads(raw))

    def embedding(self, user: UserKey) -> np.ndarray | None:
        """The user's embedding, or None."""
        raw = self.read(DataKey("user_embeddings", user))
        return None if raw is None else decode_embedding(raw)[0]

    def seen(self, user: UserKey) -> list[str]:
        """Items the user interacted with recently (the worker keeps the list)."""
        raw = self.read(DataKey("sessions", user))
        return [] if raw is None else list(json.loads(raw).get("seen", []))

    def trending(self) -> list[str]:
        """The region's trending items (the worker refreshes them)."""
        raw = self.read(DataKey("aggregates", f"trending-{self.region}"))
        return [] if raw is None else list(json.loads(raw).get("items", []))

    def item(self, item_id: str) -> dict[str, Any] | None:
        """An item's catalog entry, or None."""
        raw = self.read(DataKey("item_catalog", item_id))
        return None if raw is None else dict(json.loads(raw))

    def recommend(self, user: UserKey, k: int, context: str | None) -> RecommendResult:
        """Run the staged pipeline for ``user`` in this region."""

        def on_stage(stage: str, seconds: float) -> None:
            m.STAGE_SECONDS.labels(self.region, stage).observe(seconds)

        res = self.pipeline.run(user, k=k, context=context, sources=self, on_stage=on_stage)
        if res.degraded:
            m.DEGRADED.labels(self.region, res.degraded_stage or "?").inc()
        return res

    def shard_filter(self, shard: str) -> str:
        """The Milvus filter that selects one item shard's items (by the item attribute)."""
        items = self.router.items
        attr = items.attribute
        if shard == items.default_shard:
            named = sorted(v for v, s in items.value_to_shard.items() if s != shard)
            return f"{attr} not in {json.dumps(named)}" if named else ""
        values = sorted(v for v, s in items.value_to_shard.items() if s == shard)
        return f"{attr} in {json.dumps(values)}"

    def _milvus_recall(self, vector: np.ndarray, k: int, shard: str) -> list[tuple[str, float]]:
        """Recall over one item shard with a Milvus search (``deploy.recall: milvus``)."""
        assert self.stores.vector is not None
        flt = self.shard_filter(shard)
        items = 'data_class == "item_embeddings"'
        hits = self.stores.vector.search(vector, k, filter=f"({flt}) and {items}" if flt else items)
        return [(h.id, h.distance) for h in hits]

    # ------------------------------------------------------------------ interactions
    def ingest(self, items: Sequence[Interaction], client_region: str) -> dict[str, Any]:
        """Send each interaction to its primary region's buffer; acknowledged when durable.

        Returns:
            ``{"accepted": n, "event_ids": [...], "by_region": {...}}``.

        Raises:
            RequestRefused: 429 when a buffer is full, 503 when a primary region failed;
                the body lists the event ids that *were* acknowledged.
        """
        groups: dict[str, list[Interaction]] = {}
        for it in items:
            plan = self._router_plan(
                client_region, it.user, "write", self.health, ("interactions",)
            )
            if plan.node_region is None:
                raise RequestRefused(503, "no_region", plan.reason, headers={"Retry-After": "1"})
            groups.setdefault(plan.node_region, []).append(it)
        acked: list[str] = []
        by_region: dict[str, int] = {}
        failures: list[RequestRefused] = []
        for r, group in groups.items():
            try:
                if r == self.region:
                    self.ingest_local(group)
                else:
                    status, data = self.peers.call_json(
                        r,
                        "POST",
                        "/internal/v1/ingest",
                        {"interactions": [it.to_json() for it in group]},
                        timeout_s=12.0,
                    )
                    if status == 429:
                        raise RequestRefused(
                            429,
                            "buffer_full",
                            str(data.get("error", data)),
                            headers={"Retry-After": str(data.get("retry_after_s", 1))},
                        )
                    if status != 200:
                        raise RequestRefused(
                            status,
                            str(data.get("code", "ingest_failed")),
                            str(data.get("error", data)),
                        )
                acked += [it.event_id for it in group]
                by_region[r] = len(group)
            except BufferFullError as exc:
                failures.append(
                    RequestRefused(
                        429,
                        "buffer_full",
                        str(exc),
                        headers={"Retry-After": f"{exc.retry_after_s:g}"},
                    )
                )
            except RequestRefused as exc:
                failures.append(exc)
            except GeoshardError as exc:
                failures.append(
                    RequestRefused(503, "not_durable", str(exc), headers={"Retry-After": "1"})
                )
        if failures:
            worst = max(failures, key=lambda f: (f.status == 429, f.status))
            if worst.status == 429:
                m.INGEST_REJECTED.labels(self.region).inc()
            raise RequestRefused(
                worst.status,
                worst.code,
                f"{worst}; acknowledged: {len(acked)} of {len(items)}",
                headers=worst.headers,
                extra={"acknowledged_event_ids": acked},
            )
        return {"accepted": len(acked), "event_ids": acked, "by_region": by_region, "durable": True}

    def ingest_local(self, items: Sequence[Interaction]) -> list[str]:
        """Buffer interactions whose primary is this region; their stream ids once durable.

        Raises:
            ResidencyError: an interaction this region may not store (nothing admitted).
            BufferFullError: no room (nothing admitted).
        """
        for it in items:
            if not self.residency.is_allowed(
                it.user.jurisdiction, "interactions", self.region, "store"
            ):
                m.RESIDENCY_REFUSALS.labels(self.region, "ingest").inc()
                self.residency.check(it.user.jurisdiction, "interactions", self.region, "store")
        targets = [ingest_targets(self.router, it.user, self.region) for it in items]
        try:
            ids = self.ingest_buffer.submit(items, targets)
        except BufferFullError:
            m.INGEST_REJECTED.labels(self.region).inc()
            raise
        for it in items:
            self.access.touch(f"interactions:{it.user}")
        return ids

    def interactions(self, user: UserKey) -> list[dict[str, Any]]:
        """The user's interactions, from the replica the plan chooses (oldest first)."""
        plan = self._router_plan(self.region, user, "read", self.health, ("interactions",))
        if plan.node is None:
            raise NoHealthyReplicaError(plan.reason)
        errors = []
        for node in (plan.node, *plan.fallbacks):
            r = self.router.node_region[node]
            try:
                if r == self.region:
                    return self.interactions_local(user)
                status, data = self.peers.call_json(
                    r, "GET", f"/internal/v1/interactions/{user}", timeout_s=5.0
                )
                if status != 200:
                    raise BackendUnavailableError(f"{r} answered {status}: {data}")
                return list(data["interactions"])
            except BackendUnavailableError as exc:
                errors.append(str(exc))
        raise BackendUnavailableError(
            f"no replica of {user}'s interactions answered: {'; '.join(errors)}"
        )

    def interactions_local(self, user: UserKey) -> list[dict[str, Any]]:
        """The user's interactions held in this region: drained (cold) and not yet drained
        (the write log after the drain cursor); each event once, oldest first.

        Raises:
            ResidencyError: this region may not hold them.
        """
        key = DataKey("interactions", user)
        self.residency.check(user.jurisdiction, "interactions", self.region, "store")
        return interaction_history(self.log, self.stores.cold, key, HISTORY_LIMIT)

    # ------------------------------------------------------------------ status
    def healthz(self) -> dict[str, Any]:
        """This region's health as other regions' monitors read it."""
        return {
            "ok": self.health_monitor.local_ok,
            "region": self.region,
            "items_version": self._index_version,
            "items": len(self._index),
        }

    def status(self) -> dict[str, Any]:
        """What ``geoshard status`` shows for this region's API."""
        try:
            stats = self.log.stats()
        except GeoshardError as exc:
            stats = {"error": str(exc)}
        views = {
            r: {"state": v.state, "since_s": round(v.since_s, 3), "detail": v.detail[:200]}
            for r, v in self.health_monitor.views.items()
        }
        return {
            "region": self.region,
            "ok": self.health_monitor.local_ok,
            "health": views,
            "ingest_depth": self.ingest_buffer.depth,
            "items_version": self._index_version,
            "items": len(self._index),
            "worker": stats,
            "uptime_s": round(time.time() - self.started_s, 1),
        }


#: The personal data classes each request type processes at its entry.
_CLASSES: dict[str, tuple[str, ...]] = {
    **REQUEST_DATA_CLASSES,
    "feature_write": ("user_features",),
    "embedding_write": ("user_embeddings",),
    "interaction_read": ("interactions",),
}


def parse_user(text: str, field: str = "user_id") -> UserKey:
    """A user key from a request, or a 400 naming the field and the expected form.

    Raises:
        RequestRefused: a malformed key.
    """
    try:
        return UserKey.parse(text)
    except InputError as exc:
        raise RequestRefused(
            400, "invalid_user_id", f"{field}: {exc}", extra={"field": field}
        ) from None


def refusal_of(exc: GeoshardError) -> RequestRefused:
    """The HTTP refusal for an error of the taxonomy."""
    if isinstance(exc, RequestRefused):
        return exc
    if isinstance(exc, ResidencyError):
        return RequestRefused(403, "residency", str(exc))
    if isinstance(exc, InputError):
        return RequestRefused(400, "invalid_input", str(exc))
    if isinstance(exc, BufferFullError):
        return RequestRefused(
            429, "buffer_full", str(exc), headers={"Retry-After": f"{exc.retry_after_s:g}"}
        )
    if isinstance(exc, NoHealthyReplicaError):
        return RequestRefused(503, "no_replica", str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, ConfigError):
        return RequestRefused(400, "invalid_request", str(exc))
    return RequestRefused(503, "backend_unavailable", str(exc), headers={"Retry-After": "1"})
