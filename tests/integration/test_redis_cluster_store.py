"""RedisClusterHotStore against a real 3+3 Redis Cluster: batching per node and slot,
replica reads, durable writes with WAIT, and redirections during a slot migration."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from geoshard.cluster.local.redis_procs import RedisClusterProcs, RedisServer
from geoshard.errors import BackendError, DurabilityError
from geoshard.keys import DataKey, UserKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import load_spec
from geoshard.storage.redis_store import RedisClusterHotStore, RedisClusterHotStoreConfig

pytestmark = pytest.mark.integration
_ns = itertools.count()
#: make_store(**config overrides) -> a cluster store with a fresh namespace, closed after the test
MakeStore = Callable[..., RedisClusterHotStore]


def user(uid: int, data_class: str = "user_features") -> DataKey:
    return DataKey(data_class, UserKey("us", uid))


@pytest.fixture(scope="module")
def policy(repo_root: Path) -> ResidencyPolicy:
    return ResidencyPolicy.from_spec(load_spec(repo_root / "examples" / "local.yaml"))


@pytest.fixture
def make_store(redis_cluster: RedisClusterProcs, policy: ResidencyPolicy) -> Iterator[MakeStore]:
    made: list[RedisClusterHotStore] = []

    def make(**overrides: Any) -> RedisClusterHotStore:
        cfg = RedisClusterHotStoreConfig(
            startup_nodes=redis_cluster.startup_nodes, namespace=f"i{next(_ns)}", **overrides
        )
        store = RedisClusterHotStore(cfg, region="us-east", residency=policy)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def _commandstats(node: RedisServer, command: str) -> int:
    client = node.client()
    try:
        stats = client.info("commandstats").get(f"cmdstat_{command}", {})
        return int(stats.get("calls", 0))
    finally:
        client.close()


def _reset_stats(nodes: list[RedisServer]) -> None:
    for node in nodes:
        client = node.client()
        try:
            client.config_resetstat()
        finally:
            client.close()


def test_get_many_sends_one_mget_per_slot_to_every_primary(
    redis_cluster: RedisClusterProcs, make_store: MakeStore
) -> None:
    store = make_store()
    keys = [user(uid, dc) for uid in range(150) for dc in ("user_features", "sessions")]
    store.put_many([(k, str(k).encode()) for k in keys])
    primaries = redis_cluster.primary_nodes()
    _reset_stats(primaries)

    assert store.get_many(keys) == [str(k).encode() for k in keys]

    slots = {store.slot_of(k) for k in keys}
    assert len(slots) == 150  # two classes of one user share a slot
    calls = [_commandstats(n, "mget") for n in primaries]
    assert all(c > 0 for c in calls), calls
    assert sum(calls) == len(slots)
    assert sum(_commandstats(n, "get") for n in primaries) == 0


def test_replica_reads_are_served_by_replicas(
    redis_cluster: RedisClusterProcs, make_store: MakeStore
) -> None:
    writer = make_store(durable_writes=True, wait_replicas=1, wait_timeout_ms=2000)
    reader = RedisClusterHotStore(
        writer.config.model_copy(update={"read_from_replicas": True}),
        region="us-east",
        residency=writer.residency,
    )
    try:
        keys = [user(uid) for uid in range(60)]
        writer.put_many([(k, b"v") for k in keys])
        replicas, primaries = redis_cluster.replica_nodes(), redis_cluster.primary_nodes()
        _reset_stats(replicas + primaries)
        assert reader.get_many(keys) == [b"v"] * 60
        assert sum(_commandstats(n, "mget") for n in replicas) > 0
        assert sum(_commandstats(n, "mget") for n in primaries) == 0
    finally:
        reader.close()


def test_durable_writes_are_acknowledged_when_the_replica_has_them(
    redis_cluster: RedisClusterProcs, make_store: MakeStore
) -> None:
    store = make_store(durable_writes=True, wait_replicas=1, wait_timeout_ms=2000)
    key = user(1)
    store.put(key, b"durable")
    primary = redis_cluster.node_for_slot(store.slot_of(key))
    (replica,) = redis_cluster.replicas_of(primary)
    client = replica.client()
    try:
        client.execute_command("READONLY")
        assert client.get(store.key_name(key)) == b"durable"
    finally:
        client.close()


def test_durable_write_raises_when_the_replica_does_not_ack(
    redis_cluster: RedisClusterProcs, make_store: MakeStore
) -> None:
    store = make_store(durable_writes=True, wait_replicas=1, wait_timeout_ms=100)
    key = user(2)
    primary = redis_cluster.node_for_slot(store.slot_of(key))
    (replica,) = redis_cluster.replicas_of(primary)
    replica.pause()  # SIGSTOP, well under the 2 s node timeout: no failover
    try:
        with pytest.raises(
            DurabilityError,
            match=rf"redis {primary.address}: durable write "
            r"acknowledged by 0 of 1 required replica\(s\) "
            r"within 100 ms.*indeterminate",
        ):
            store.put(key, b"maybe")
    finally:
        replica.resume()
    assert store.get(key) == b"maybe"  # applied on the primary: indeterminate, not absent


def test_durable_write_requiring_more_replicas_than_exist_raises(make_store: MakeStore) -> None:
    store = make_store(durable_writes=True, wait_replicas=2, wait_timeout_ms=50)
    with pytest.raises(DurabilityError, match=r"acknowledged by 1 of 2 required") as info:
        store.put_many([(user(uid), b"v") for uid in range(10)])
    assert (info.value.acked, info.value.required) == (1, 2)


def _node_id(node: RedisServer) -> str:
    client = node.client()
    try:
        return str(client.execute_command("CLUSTER MYID").decode())
    finally:
        client.close()


def test_reads_and_writes_follow_a_slot_migration_through_ask_and_moved(
    redis_cluster: RedisClusterProcs, make_store: MakeStore
) -> None:
    store = make_store()
    moved_key, staying_key = user(77, "user_features"), user(77, "sessions")
    store.put_many([(moved_key, b"m"), (staying_key, b"s")])
    slot = store.slot_of(moved_key)
    source = redis_cluster.node_for_slot(slot)
    target = next(n for n in redis_cluster.primary_nodes() if n is not source)
    src, tgt = source.client(), target.client()
    try:
        tgt.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", _node_id(source))
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", _node_id(target))
        src.execute_command(
            "MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", store.key_name(moved_key)
        )
        # Mid-migration: the source answers ASK for the migrated key only.
        assert store.get_many([moved_key, staying_key]) == [b"m", b"s"]
        store.put(moved_key, b"m2")
        assert store.get(moved_key) == b"m2"
        assert store.retry_stats.errors.get("AskError", 0) >= 2
        asking = tgt.pipeline(transaction=False)
        asking.execute_command("ASKING")
        asking.execute_command("GET", store.key_name(moved_key))
        assert asking.execute()[1] == b"m2"  # the write went to the importing node

        src.execute_command(
            "MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", store.key_name(staying_key)
        )
        for node in redis_cluster.primary_nodes():
            c = node.client()
            try:
                c.execute_command("CLUSTER SETSLOT", slot, "NODE", _node_id(target))
            finally:
                c.close()
        # Finished: the client's slot map is stale, the source answers MOVED.
        assert store.get_many([moved_key, staying_key]) == [b"m2", b"s"]
        assert store.retry_stats.errors.get("MovedError", 0) >= 1
        assert store.retry_stats.topology_refreshes >= 1
        assert redis_cluster.node_for_slot(slot) is target
    finally:
        src.close()
        tgt.close()


def test_an_unreachable_cluster_is_a_backend_error_naming_the_nodes() -> None:
    from geoshard.cluster.local.redis_procs import find_free_port

    port = find_free_port()
    cfg = RedisClusterHotStoreConfig(
        startup_nodes=[f"127.0.0.1:{port}"], max_attempts=2, retry_budget_s=1.0
    )
    with pytest.raises(BackendError, match=rf"redis 127\.0\.0\.1:{port}: connect failed"):
        RedisClusterHotStore(cfg, region="us-east", residency=None)


def test_a_server_error_reply_is_a_backend_error_and_not_retried(
    redis_cluster: RedisClusterProcs, make_store: MakeStore
) -> None:
    store = make_store()
    key = user(5)
    primary = redis_cluster.node_for_slot(store.slot_of(key))
    admin = primary.client()
    try:
        admin.config_set("maxmemory", "1")  # every write now fails with -OOM
        with pytest.raises(
            BackendError,
            match=rf"redis {primary.address}: SET of 1 keys "
            r"failed: OutOfMemoryError: command not allowed",
        ):
            store.put(key, b"v")
    finally:
        admin.config_set("maxmemory", "0")
        admin.close()
    assert store.retry_stats.retries == 0
    assert store.get(key) is None
