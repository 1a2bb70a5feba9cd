"""RedisServer and RedisClusterProcs: lifecycle, chaos hooks and the errors they raise."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from geoshard.cluster.local.redis_procs import (
    CLUSTER_BUS_OFFSET,
    RedisClusterProcs,
    RedisServer,
    find_free_port,
    redis_binary,
)
from geoshard.errors import BackendError, ConfigError, DurabilityError, RetryExhaustedError
from geoshard.keys import DataKey
from geoshard.storage.redis_store import RedisHotStore, RedisHotStoreConfig

pytestmark = pytest.mark.integration


def test_a_server_starts_answers_and_stops_cleaning_its_dir(redis_server: RedisServer) -> None:
    with RedisServer() as server:
        workdir = server.workdir
        assert server.client().ping() is True
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert not server.running
    assert workdir is not None and not workdir.exists()
    server.stop()  # idempotent


def test_kill_then_restart_keeps_the_port(redis_server: RedisServer) -> None:
    server = RedisServer().start()
    try:
        port = server.port
        server.kill()
        assert not server.running
        server.restart()
        assert server.port == port and server.client().ping() is True
    finally:
        server.stop()


def test_a_taken_fixed_port_is_a_clear_error(redis_server: RedisServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(
            BackendError,
            match=rf"redis-server on 127\.0\.0\.1:{port} exited "
            r"at startup \(port in use\)",
        ):
            RedisServer(port=port, startup_timeout_s=5).start()


def test_a_missing_binary_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(
        BackendError,
        match=r"redis-server not found on PATH; install it: "
        r"apt-get install -y redis-server",
    ):
        redis_binary("redis-server")
    with pytest.raises(BackendError, match=r"redis-cli not found on PATH"):
        RedisClusterProcs()


def test_free_ports_leave_room_for_the_cluster_bus() -> None:
    port = find_free_port(cluster_bus=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"primaries": 2}, r"primaries\(=2\) must be >= 3"),
        ({"replicas_per_primary": -1}, r"replicas_per_primary\(=-1\) must be >= 0"),
        ({"node_timeout_ms": 0}, r"node_timeout_ms\(=0\) must be > 0"),
    ],
)
def test_bad_cluster_shapes_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RedisClusterProcs(**kwargs)


def test_standalone_store_gives_up_on_a_dead_server_naming_it(redis_server: RedisServer) -> None:
    server = RedisServer().start()
    store = RedisHotStore(
        RedisHotStoreConfig(url=server.url, max_attempts=3, retry_budget_s=2.0, backoff_cap_s=0.01),
        region="us-east",
        residency=None,
    )
    try:
        key = DataKey("item_catalog", "sku-1")
        store.put(key, b"v")
        server.kill()
        with pytest.raises(
            RetryExhaustedError,
            match=rf"redis 127\.0\.0\.1:{server.port}: "
            r"GET .* failed after 3 attempt\(s\)",
        ):
            store.get(key)
        assert store.retry_stats.retries == 2 and store.retry_stats.exhausted == 1
    finally:
        store.close()
        server.stop()


def test_standalone_durable_write_without_replicas_raises(redis_server: RedisServer) -> None:
    store = RedisHotStore(
        RedisHotStoreConfig(
            url=redis_server.url, durable_writes=True, wait_replicas=1, wait_timeout_ms=20
        ),
        region="us-east",
        residency=None,
    )
    try:
        with pytest.raises(DurabilityError, match=r"acknowledged by 0 of 1 required"):
            store.put(DataKey("item_catalog", "sku-d"), b"v")
    finally:
        store.close()


def test_a_cluster_in_a_given_dir_on_given_ports_keeps_the_dir(tmp_path: Any) -> None:
    from geoshard.cluster.ports import PortAllocator

    ports = PortAllocator()
    wanted = [ports.take(f"node {i}", cluster_bus=True) for i in range(3)]
    cluster = RedisClusterProcs(
        primaries=3,
        replicas_per_primary=0,
        root=tmp_path / "rc",
        ports=wanted,
        extra_args=["--appendonly", "yes"],
    )
    try:
        cluster.start()
        assert [n.port for n in cluster.nodes] == wanted
        assert all((tmp_path / "rc" / f"node-{i}").is_dir() for i in range(3))
        client = cluster.nodes[0].client()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.close()
    finally:
        cluster.stop()
    assert all(not n.running for n in cluster.nodes) or not cluster.nodes
    assert (tmp_path / "rc" / "node-0" / "nodes.conf").is_file()  # kept: the caller's dir


def test_ports_must_match_the_node_count() -> None:
    with pytest.raises(ConfigError, match="ports gives 2 ports for 3 nodes; give one per node"):
        RedisClusterProcs(primaries=3, replicas_per_primary=0, ports=[1, 2])
