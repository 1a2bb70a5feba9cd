"""A region's control keys in its own Redis: the write log (a Redis Stream), the
consumers' cursors, the worker's stats and the last-access times that drive demotion.

All keys of region ``r`` share the hash tag ``{gs:r}``, so in a Redis Cluster they live
in one slot on one primary, and a write to them is made durable by a ``WAIT`` on the
same connection, exactly like a tier write (:class:`RegionLog` sends the commands and
the ``WAIT`` as one pipeline to the node that owns the slot):

==========================  ======================================================
``{gs:r}:log``              the write log: every acknowledged write made in r
``{gs:r}:cursor:<name>``    how far a consumer got (``drain``, ``ship:<region>``)
``{gs:r}:stats``            a hash the region worker refreshes (lag, drained, ...)
``{gs:r}:access``           sorted set: key text -> last access (unix seconds)
==========================  ======================================================

This module is the one adapter that sends raw commands through the hot store's
redis-py client (``RedisCluster.get_node_from_key`` and ``get_redis_connection``, both
public); every failure becomes the error taxonomy, and the store's retry policy
retries the retryable ones.

Examples:
    >>> log = RegionLog(store, "eu-west", wait_replicas=1, wait_timeout_ms=500)  # doctest: +SKIP
    >>> log.append([{"kind": "put", "key": "user_features:eu:1"}])               # doctest: +SKIP
    ['1718000000000-0']
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, cast

import redis
import redis.exceptions as rex
from redis.cluster import RedisCluster

from geoshard.errors import BackendError, DurabilityError
from geoshard.storage.base import HotStore
from geoshard.storage.redis_store import translate_redis_error
from geoshard.storage.retry import RetryPolicy, RetryStats

__all__ = ["LogEntry", "RegionLog", "region_tag"]

#: One log entry: its stream id and its fields (bytes, as Redis returns them).
LogEntry = tuple[str, dict[bytes, bytes]]


def region_tag(region: str) -> str:
    """The hash tag of a region's control keys: ``{gs:<region>}``."""
    return "{gs:" + region + "}"


class RegionLog:
    """The control keys of one region, on the region's hot store.

    Args:
        store: the region's hot store (``redis`` or ``redis_cluster`` backend).
        region: the region.
        wait_replicas: replicas a durable write must reach (``WAIT``); 0 = no WAIT.
        wait_timeout_ms: the WAIT timeout.

    Raises:
        BackendError: ``store`` is not a Redis store.
    """

    def __init__(
        self, store: HotStore, region: str, *, wait_replicas: int = 1, wait_timeout_ms: int = 500
    ) -> None:
        client = getattr(store, "client", None)
        if not isinstance(client, (redis.Redis, RedisCluster)):
            raise BackendError(
                f"the region log needs a Redis hot store; got {type(store).__name__}"
            )
        retry = getattr(store, "retry", None)
        if not isinstance(retry, RetryPolicy):
            raise BackendError(f"{type(store).__name__} has no retry policy; use a Redis store")
        self.store = store
        self.retry = retry
        self.client: redis.Redis | RedisCluster = client
        self.region = region
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        tag = region_tag(region)
        self.log_key = f"{tag}:log"
        self.stats_key = f"{tag}:stats"
        self.access_key = f"{tag}:access"
        self._tag = tag
        self.retry_stats = RetryStats()

    def cursor_key(self, name: str) -> str:
        """The key of consumer ``name``'s cursor."""
        return f"{self._tag}:cursor:{name}"

    # -- sending -----------------------------------------------------------------------
    def _node_client(self) -> redis.Redis:
        if isinstance(self.client, RedisCluster):
            node = self.client.get_node_from_key(self.log_key)
            return cast("redis.Redis", self.client.get_redis_connection(node))
        return self.client

    def _refresh(self) -> None:
        if isinstance(self.client, RedisCluster):
            self.retry_stats.topology_refreshes += 1
            with contextlib.suppress(rex.RedisError, rex.RedisClusterException):
                self.client.nodes_manager.initialize()

    def execute(
        self,
        commands: Sequence[tuple[Any, ...]],
        *,
        durable: bool = False,
        what: str = "control keys",
    ) -> list[Any]:
        """Send ``commands`` as one pipeline to the node of the region's slot.

        With ``durable``, the pipeline ends with ``WAIT wait_replicas wait_timeout_ms``.

        Raises:
            DurabilityError: fewer replicas than required acknowledged (the commands
                were applied on the primary: indeterminate).
            BackendError: Redis failed past the store's retry policy.
        """
        wait = durable and self.wait_replicas > 0

        def attempt() -> list[Any]:
            try:
                pipe = self._node_client().pipeline(transaction=False)
                for cmd in commands:
                    pipe.execute_command(*cmd)
                if wait:
                    pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
                replies = pipe.execute(raise_on_error=True)
            except (rex.RedisError, rex.RedisClusterException) as exc:
                if isinstance(
                    exc,
                    (
                        rex.MovedError,
                        rex.ConnectionError,
                        rex.ClusterDownError,
                        rex.ReadOnlyError,
                        rex.TimeoutError,
                    ),
                ):
                    self._refresh()
                raise translate_redis_error(exc, node=self.store_address(), op=what) from exc
            return list(replies)

        replies = self.retry.call(
            attempt,
            what=f"redis {self.store_address()}: {what}",
            stats=self.retry_stats,
            hint="Check the region's Redis (geoshard status)",
        )
        if wait:
            acked = int(replies.pop())
            if acked < self.wait_replicas:
                raise DurabilityError(
                    f"{what} in {self.region}: acknowledged by {acked} of {self.wait_replicas} "
                    f"replica(s) within {self.wait_timeout_ms} ms; it may be lost on failover "
                    "(indeterminate); retry it",
                    node=self.store_address(),
                    acked=acked,
                    required=self.wait_replicas,
                )
        return replies

    def ping(self) -> bool:
        """True when the node of the region's slot answers PING (one refresh and retry on
        a failure, so a finished failover counts as healthy); never raises."""
        for attempt in (0, 1):
            try:
                return bool(self._node_client().ping())
            except (rex.RedisError, rex.RedisClusterException, OSError):
                if attempt == 0:
                    self._refresh()
        return False

    def store_address(self) -> str:
        """Where the commands go (the store's address)."""
        return str(getattr(self.store, "address", "?"))

    # -- the write log -------------------------------------------------------------------
    def append(
        self, entries: Sequence[Mapping[str, str | bytes]], *, durable: bool = True
    ) -> list[str]:
        """Append entries to the log (``XADD``), durably by default; their stream ids."""
        if not entries:
            return []
        cmds = []
        for e in entries:
            flat: list[str | bytes] = []
            for k, v in e.items():
                flat += [k, v]
            cmds.append(("XADD", self.log_key, "*", *flat))
        ids = self.execute(cmds, durable=durable, what=f"XADD of {len(cmds)} log entries")
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def read(self, after: str, count: int = 1000) -> list[LogEntry]:
        """Up to ``count`` entries after stream id ``after`` ('0' = from the start)."""
        (rows,) = self.execute(
            [("XRANGE", self.log_key, f"({after}" if after != "0" else "-", "+", "COUNT", count)],
            what="XRANGE of the log",
        )
        return [(i.decode() if isinstance(i, bytes) else str(i), dict(_pairs(f))) for i, f in rows]

    def length(self) -> int:
        """Entries in the log."""
        (n,) = self.execute([("XLEN", self.log_key)], what="XLEN of the log")
        return int(n)

    def count_after(self, after: str, cap: int = 10_000) -> tuple[int, str | None]:
        """``(entries after stream id after, capped at cap; id of the first of them)``."""
        (rows,) = self.execute(
            [("XRANGE", self.log_key, f"({after}" if after != "0" else "-", "+", "COUNT", cap)],
            what="XRANGE count",
        )
        if not rows:
            return 0, None
        first = rows[0][0]
        return len(rows), first.decode() if isinstance(first, bytes) else str(first)

    def trim(self, min_id: str) -> int:
        """Drop entries older than ``min_id`` (every consumer is past them)."""
        (n,) = self.execute([("XTRIM", self.log_key, "MINID", min_id)], what="XTRIM of the log")
        return int(n)

    # -- cursors -------------------------------------------------------------------------
    def cursor(self, name: str) -> str:
        """Consumer ``name``'s cursor: the last stream id it finished ('0' = none yet)."""
        (v,) = self.execute([("GET", self.cursor_key(name))], what=f"GET cursor {name}")
        return v.decode() if isinstance(v, bytes) else "0"

    def cursors(self, names: Sequence[str]) -> dict[str, str]:
        """Several cursors at once."""
        if not names:
            return {}
        (vals,) = self.execute(
            [("MGET", *[self.cursor_key(n) for n in names])], what="MGET cursors"
        )
        return {
            n: (v.decode() if isinstance(v, bytes) else "0")
            for n, v in zip(names, vals, strict=True)
        }

    def set_cursor(self, name: str, stream_id: str) -> None:
        """Advance consumer ``name`` to ``stream_id``, durably."""
        self.execute(
            [("SET", self.cursor_key(name), stream_id)], durable=True, what=f"SET cursor {name}"
        )

    # -- stats -------------------------------------------------------------------------------
    def put_stats(self, fields: Mapping[str, str | int | float]) -> None:
        """Replace the worker's stats fields (not durable: they are refreshed every second)."""
        if fields:
            flat: list[Any] = []
            for k, v in fields.items():
                flat += [k, v]
            self.execute([("HSET", self.stats_key, *flat)], what="HSET stats")

    def stats(self) -> dict[str, str]:
        """The worker's stats fields."""
        (raw,) = self.execute([("HGETALL", self.stats_key)], what="HGETALL stats")
        if isinstance(raw, dict):
            return {_s(k): _s(v) for k, v in raw.items()}
        return {_s(k): _s(v) for k, v in _pairs(raw)}

    # -- access times (demotion) -----------------------------------------------------------
    def touch(self, last_access: Mapping[str, float]) -> None:
        """Record last-access times (``ZADD GT``: a later time always wins)."""
        if not last_access:
            return
        flat: list[Any] = []
        for k, t in last_access.items():
            flat += [t, k]
        self.execute([("ZADD", self.access_key, "GT", *flat)], what="ZADD access times")

    def idle(self, before_s: float, limit: int) -> list[str]:
        """Key texts last used before ``before_s``, oldest first, at most ``limit``."""
        (rows,) = self.execute(
            [("ZRANGEBYSCORE", self.access_key, "-inf", f"({before_s}", "LIMIT", 0, limit)],
            what="ZRANGEBYSCORE access times",
        )
        return [_s(r) for r in rows]

    def forget(self, keys: Sequence[str]) -> None:
        """Drop keys from the access times (demoted: the next read promotes and touches)."""
        if keys:
            self.execute([("ZREM", self.access_key, *keys)], what="ZREM access times")

    def tracked(self) -> int:
        """How many keys have an access time."""
        (n,) = self.execute([("ZCARD", self.access_key)], what="ZCARD access times")
        return int(n)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _pairs(flat: Any) -> list[tuple[bytes, bytes]]:
    if isinstance(flat, dict):
        return list(flat.items())
    items = list(flat)
    return list(zip(items[0::2], items[1::2], strict=True))
