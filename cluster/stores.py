"""A region's stores, built from the spec's ``storage:`` section through the registry.

Every store of a deployment (the API, the region worker, ``geoshard seed``) is made
here: :func:`backend_configs` turns the spec's ``storage:`` settings plus the addresses
`up` recorded in ``state.json`` into one backend config mapping per tier, and
:func:`open_region` hands each to :func:`geoshard.storage.base.build_backend` (the
registry and the backend's ``from_config``). Nothing builds a store by hand.

Examples:
    >>> stores = open_region(spec, state, "eu-west")       # doctest: +SKIP
    >>> stores.hot.put(DataKey("item_catalog", "sku-1"), b"{}")  # doctest: +SKIP
    >>> stores.close()                                     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from geoshard.cluster.state import DeploymentState, RegionState
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import Spec
from geoshard.storage.base import (
    Catalog,
    ColdStore,
    HotStore,
    TierName,
    VectorStore,
    build_backend,
)

__all__ = ["RegionStores", "backend_configs", "cache_store_config", "open_region"]

#: Milvus collection prefix of a deployment (one collection per region).
COLLECTION_PREFIX = "geoshard"


def backend_configs(
    spec: Spec, state: DeploymentState, region: str
) -> dict[TierName, dict[str, Any]]:
    """The backend config mapping of each tier of ``region``, as YAML would write it.

    Raises:
        KeyError: ``region`` is not in the deployment.
    """
    st = state.regions[region]
    s = spec.storage
    hot: dict[str, Any] = {
        "type": s.hot.type,
        "durable_writes": s.hot.durable_writes,
        "wait_replicas": s.hot.wait_replicas,
        "wait_timeout_ms": s.hot.wait_timeout_ms,
        "socket_timeout_s": s.hot.socket_timeout_s,
        "retry_budget_s": s.hot.retry_budget_s,
    }
    if s.hot.type == "redis_cluster":
        hot["startup_nodes"] = st.hot.addresses
    else:
        hot["url"] = f"redis://{st.hot.addresses[0]}/0"
    vector: dict[str, Any] = {
        "type": s.vector.type,
        "uri": st.vector.uri if st.vector is not None else s.vector.uri,
        "dim": s.vector.dim,
        "metric": s.vector.metric,
        "index": {
            "type": s.vector.index_type,
            "params": dict(s.vector.index_params),
            "search_params": dict(s.vector.search_params),
        },
        "collection_prefix": COLLECTION_PREFIX,
    }
    cold: dict[str, Any] = {
        "type": s.cold.type,
        "root": st.cold_root,
        "shards": s.cold.shards,
        "compression": s.cold.compression,
        "fsync": s.cold.fsync,
    }
    catalog: dict[str, Any] = {"type": s.catalog.type, "url": state.catalog_url}
    return {"hot": hot, "vector": vector, "cold": cold, "catalog": catalog}


def cache_store_config(state: RegionState, level: str) -> dict[str, Any]:
    """The hot-tier backend config of the redis-server behind cache level ``level``.

    The cache server is a plain ``redis-server`` (``type: redis``); its entries carry the
    level's TTL and it evicts LRU at ``maxmemory``. Reads of a cache never retry long:
    a slow cache is a miss, not a stall.
    """
    srv = state.caches[level]
    return {
        "type": "redis",
        "url": f"redis://127.0.0.1:{srv.port}/0",
        "namespace": level,
        "socket_timeout_s": 0.5,
        "max_attempts": 2,
        "retry_budget_s": 0.5,
    }


@dataclass
class RegionStores:
    """One region's stores (each built through the registry); close them when done."""

    region: str
    hot: HotStore
    cold: ColdStore
    caches: dict[str, HotStore] = field(default_factory=dict)
    vector: VectorStore | None = None
    catalog: Catalog | None = None

    def close(self) -> None:
        """Close every store (errors while closing are ignored: we are shutting down)."""
        for s in (self.hot, self.cold, *self.caches.values(), self.vector, self.catalog):
            if s is not None:
                with contextlib.suppress(Exception):
                    s.close()


def open_region(
    spec: Spec,
    state: DeploymentState,
    region: str,
    *,
    residency: ResidencyPolicy | None = None,
    vector: bool = False,
    catalog: bool = False,
    caches: bool = True,
) -> RegionStores:
    """Open ``region``'s stores from the spec and the recorded addresses.

    Args:
        spec: the deployment's spec.
        state: the recorded deployment.
        region: the region.
        residency: the policy every write is checked against (default: the spec's).
        vector: also open the warm tier (Milvus).
        catalog: also open the catalog.
        caches: also open the cache servers of the shared cache levels.

    Raises:
        ConfigError: a config the backend refuses.
        BackendError: a server is unreachable.
    """
    policy = residency or ResidencyPolicy.from_spec(spec)
    cfg = backend_configs(spec, state, region)
    hot = build_backend("hot", cfg["hot"], region=region, residency=policy)
    out = RegionStores(
        region, hot, build_backend("cold", cfg["cold"], region=region, residency=policy)
    )
    try:
        if caches:
            for level in state.regions[region].caches:
                out.caches[level] = build_backend(
                    "hot",
                    cache_store_config(state.regions[region], level),
                    region=region,
                    residency=policy,
                )
        if vector:
            out.vector = build_backend("vector", cfg["vector"], region=region, residency=policy)
        if catalog:
            out.catalog = build_backend("catalog", cfg["catalog"], region=region, residency=policy)
    except BaseException:
        out.close()
        raise
    return out
