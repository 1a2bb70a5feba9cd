"""pytest plugin: real Redis servers for the integration and contract suites.

* ``redis_server``: one standalone ``redis-server`` for the session.
* ``redis_cluster``: a 3-primary / 3-replica Redis Cluster for the session. Tests may
  pause a node briefly but must leave the cluster healthy; tests that kill nodes use
  ``redis_cluster_factory`` instead.
* ``redis_cluster_factory``: builds throw-away clusters, all stopped at the end of the test.

When ``redis-server`` is not on PATH the fixtures skip with the reason, except on CI
(``$CI`` set), where they fail: the CI script installs redis-server, so its absence is a
broken build, not a reason to pass.

Every process is stopped in a finalizer, even when the test or the startup fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

from geoshard.cluster.local.redis_procs import RedisClusterProcs, RedisServer


def _require_redis() -> None:
    missing = [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]
    if not missing:
        return
    reason = (
        f"{' and '.join(missing)} not found on PATH; install it: apt-get install -y redis-server"
    )
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A standalone redis-server on a free loopback port, for the whole session."""
    _require_redis()
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcs]:
    """A healthy 3 x (1 primary + 1 replica) Redis Cluster, for the whole session."""
    _require_redis()
    cluster = RedisClusterProcs(primaries=3, replicas_per_primary=1, node_timeout_ms=2000)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_factory() -> Iterator[Callable[..., RedisClusterProcs]]:
    """Start throw-away clusters (``factory(**RedisClusterProcs kwargs)``); all stopped after."""
    _require_redis()
    started: list[RedisClusterProcs] = []

    def make(**kwargs: object) -> RedisClusterProcs:
        cluster = RedisClusterProcs(**kwargs)  # type: ignore[arg-type]
        started.append(cluster)
        return cluster.start()

    try:
        yield make
    finally:
        for cluster in started:
            cluster.stop()
