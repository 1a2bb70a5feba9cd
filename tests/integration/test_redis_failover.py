"""Chaos: SIGKILL a Redis Cluster primary; the store rides the failover through its retry
policy, and gives up with a clear error when its budget is too small."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from geoshard.cluster.local.redis_procs import RedisClusterProcs
from geoshard.errors import RetryExhaustedError
from geoshard.keys import DataKey
from geoshard.storage.redis_store import RedisClusterHotStore, RedisClusterHotStoreConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def item(i: int) -> DataKey:
    return DataKey("item_catalog", f"sku-{i}")


def test_a_killed_primary_is_replaced_and_operations_succeed_through_retry(
    redis_cluster_factory: Callable[..., RedisClusterProcs],
) -> None:
    cluster = redis_cluster_factory(node_timeout_ms=1000)
    base = RedisClusterHotStoreConfig(
        startup_nodes=cluster.startup_nodes, socket_timeout_s=0.5, connect_timeout_s=0.5
    )
    durable = RedisClusterHotStore(
        base.model_copy(update={"durable_writes": True, "wait_timeout_ms": 2000}),
        region="us-east",
        residency=None,
    )
    patient = RedisClusterHotStore(
        base.model_copy(update={"max_attempts": 500, "retry_budget_s": 30.0, "backoff_cap_s": 0.2}),
        region="us-east",
        residency=None,
    )
    hasty = RedisClusterHotStore(
        base.model_copy(update={"max_attempts": 2, "retry_budget_s": 0.5, "backoff_cap_s": 0.05}),
        region="us-east",
        residency=None,
    )
    try:
        keys = [item(i) for i in range(300)]
        durable.put_many([(k, b"before") for k in keys])  # on the replicas too
        slot = patient.slot_of(keys[0])
        victim = cluster.node_for_slot(slot)
        on_victim = [k for k in keys if cluster.node_for_slot(patient.slot_of(k)) is victim]
        assert patient.get_many(keys) == [b"before"] * len(keys)  # slot maps are now warm

        victim.kill()
        killed_at = time.monotonic()
        with pytest.raises(
            RetryExhaustedError,
            match=rf"failed after 2 attempt\(s\).*"
            rf"first error at {victim.address}",
        ):
            hasty.put(keys[0], b"lost?")

        patient.put(keys[0], b"after")  # blocks through detection and election
        outage_s = time.monotonic() - killed_at
        assert patient.get_many(keys) == [b"after"] + [b"before"] * (len(keys) - 1)

        promoted = cluster.wait_failover(victim, timeout_s=30)
        assert cluster.node_for_slot(slot) is promoted
        assert promoted is not victim
        assert len(on_victim) > 0
        stats = patient.retry_stats
        assert stats.retries > 0 and stats.topology_refreshes > 0
        assert stats.errors.get("ConnectionError", 0) > 0
        assert 0.5 < outage_s < 30
    finally:
        for store in (durable, patient, hasty):
            store.close()
