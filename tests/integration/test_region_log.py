"""The region's control keys (write log, cursors, stats, access times) and the ingestion
buffer, on a real Redis Cluster with replicas (WAIT) and a standalone server without."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from geoshard.cluster.ingest import BufferFullError, IngestBuffer, Interaction
from geoshard.cluster.local.redis_procs import RedisClusterProcs, RedisServer
from geoshard.cluster.regionlog import RegionLog
from geoshard.errors import BackendUnavailableError, DurabilityError
from geoshard.keys import UserKey
from geoshard.storage.base import HotStore, build_backend

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster_store(redis_cluster: RedisClusterProcs) -> Iterator[HotStore]:
    store = build_backend(
        "hot",
        {
            "type": "redis_cluster",
            "startup_nodes": redis_cluster.startup_nodes,
            "durable_writes": True,
        },
        region="eu-west",
        residency=None,
    )
    yield store
    store.close()


@pytest.fixture
def log(cluster_store: HotStore, request: pytest.FixtureRequest) -> RegionLog:
    region = f"t{zlib.crc32(request.node.name.encode())}"  # a fresh slot of keys per test
    return RegionLog(cluster_store, region, wait_replicas=1, wait_timeout_ms=2000)


def test_the_log_appends_durably_and_reads_after_a_cursor(log: RegionLog) -> None:
    ids = log.append([{"kind": "put", "key": f"k{i}", "value": b"\x00\xffv"} for i in range(5)])
    assert len(ids) == 5 and ids == sorted(ids, key=lambda s: tuple(map(int, s.split("-"))))
    rows = log.read("0")
    assert [r[0] for r in rows] == ids and rows[0][1][b"value"] == b"\x00\xffv"
    assert [r[0] for r in log.read(ids[1], count=2)] == ids[2:4]
    assert log.count_after(ids[2]) == (2, ids[3])
    assert log.cursor("drain") == "0"
    log.set_cursor("drain", ids[2])
    log.set_cursor("ship:x", ids[3])
    assert log.cursors(["drain", "ship:x", "ship:y"]) == {
        "drain": ids[2],
        "ship:x": ids[3],
        "ship:y": "0",
    }
    log.trim(ids[2])
    assert [r[0] for r in log.read("0")] == ids[2:] and log.length() == 3
    assert log.ping()


def test_stats_and_access_times(log: RegionLog) -> None:
    log.put_stats({"heartbeat": 1.5, "drained": 3})
    log.put_stats({"drained": 4})
    assert log.stats() == {"heartbeat": "1.5", "drained": "4"}
    log.touch({"user_features:eu:1": 100.0, "user_features:eu:2": 200.0})
    log.touch({"user_features:eu:1": 50.0})  # an older time never wins (ZADD GT)
    assert log.idle(150.0, limit=10) == ["user_features:eu:1"]
    assert log.idle(1000.0, limit=1) == ["user_features:eu:1"]
    log.forget(["user_features:eu:1"])
    assert log.tracked() == 1


def _it(n: int, kind: str) -> Interaction:
    return Interaction(UserKey("eu", n), f"sku-{n}", kind, 1.7e9 + n, f"e{n}")


def test_the_buffer_flushes_purchases_then_clicks_then_views(log: RegionLog) -> None:
    buf = IngestBuffer(log, capacity=10, flush_batch=3)
    done: dict[str, list[str]] = {}
    batch = [
        _it(1, "view"),
        _it(2, "click"),
        _it(3, "purchase"),
        _it(4, "view"),
        _it(5, "purchase"),
    ]
    th = threading.Thread(target=lambda: done.setdefault("ids", buf.submit(batch, [()] * 5)))
    th.start()
    deadline = time.monotonic() + 5
    while buf.depth < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert buf.depth == 5
    with pytest.raises(BufferFullError, match="holds 5 of 10 interactions and cannot take 6 more"):
        buf.submit([_it(10 + i, "view") for i in range(6)], [()] * 6)
    assert buf.depth == 5  # nothing of the refused batch was admitted
    assert buf.flush_once() == 3 and buf.flush_once() == 2
    th.join(5)
    rows = log.read("0")
    import json

    order = [json.loads(f[b"value"])["type"] for _, f in rows]
    assert order == ["purchase", "purchase", "click", "view", "view"]
    assert sorted(done["ids"]) == [r[0] for r in rows]  # every item acknowledged with its id


def test_an_acknowledgement_needs_the_replica(tmp_path: Path) -> None:
    """A standalone server with no replica: WAIT 1 never reaches 1, so nothing is acked."""
    with RedisServer() as server:
        store = build_backend(
            "hot", {"type": "redis", "url": server.url}, region="eu-west", residency=None
        )
        try:
            log = RegionLog(store, "eu-west", wait_replicas=1, wait_timeout_ms=50)
            with pytest.raises(DurabilityError, match="acknowledged by 0 of 1 replica"):
                log.append([{"kind": "put", "key": "k", "value": "v"}])
            buf = IngestBuffer(log, capacity=10)
            buf.start()
            try:
                with pytest.raises(DurabilityError, match="indeterminate"):
                    buf.submit([_it(1, "click")], [()], timeout_s=5)
            finally:
                buf.stop()
            with pytest.raises(BackendUnavailableError, match="shutting down"):
                buf.submit([_it(2, "click")], [()])
        finally:
            store.close()
