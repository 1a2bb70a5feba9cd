"""The Redis hot tier: a standalone server (:class:`RedisHotStore`) or a Redis Cluster
(:class:`RedisClusterHotStore`, on ``redis.cluster.RedisCluster`` from redis-py).

Both keep the contract of :class:`~geoshard.storage.base.HotStore` (the same suite runs
over them and :class:`~geoshard.storage.memory.MemoryHotStore`) and add:

* **Key layout with hash tags**: ``[<namespace>:]{<shard>}:<data_class>:<owner>``
  (:func:`~geoshard.storage.keylayout.hot_key_name`). The shard defaults to the key's owner
  (``eu:42``), so every data class of one user shares a slot; pass ``shard_of`` to
  group by another logical shard.
* **Batching**: :meth:`get_many` groups keys by node and slot and sends one pipeline per
  node (one MGET per slot); :meth:`put_many` sends one pipeline of SETs per node.
* **Retry with backoff** under a :class:`~geoshard.storage.retry.RetryPolicy`, bounded in
  attempts *and* in total time. Each attempt translates redis-py's exceptions into the
  error taxonomy (:func:`translate_redis_error`): connection loss, timeouts, MOVED/ASK,
  TRYAGAIN, CLUSTERDOWN and writes to a demoted primary become the retryable
  :class:`~geoshard.errors.BackendUnavailableError`; every other Redis error becomes a
  final :class:`~geoshard.errors.BackendError`, and the policy branches on that flag.
* **Replica reads** (cluster, ``read_from_replicas: true``): reads round-robin over the
  replicas, which may lag the primary.
* **Durable-write mode** (``durable_writes: true``): each node's write pipeline ends with
  ``WAIT wait_replicas wait_timeout_ms``; fewer acks raise
  :class:`~geoshard.errors.DurabilityError`.
  In our loopback partition test WAIT 1 roughly halved single-client write throughput
  (6,485 -> 3,191 ops/s) and removed the loss of 3,038 acknowledged writes; it narrows
  the loss window, it does not make Redis strongly consistent (docs/storage-hot.md).

Every write validates the whole batch (type, size, TTL) and checks residency with
:meth:`~geoshard.storage.base.Tier.guard_write` before any I/O, so a bad item writes
nothing. Redis errors surface as :class:`~geoshard.errors.BackendError` naming the
server's ``host:port``.

Examples:
    >>> from geoshard.keys import DataKey
    >>> cfg = RedisHotStoreConfig(url="redis://127.0.0.1:6379/0")
    >>> with RedisHotStore(cfg, region="us-east", residency=None) as store:  # doctest: +SKIP
    ...     store.put(DataKey("item_catalog", "sku-1"), b"{}", ttl_s=60)
    ...     store.get_many([DataKey("item_catalog", "sku-1"), DataKey("item_catalog", "x")])
    [b'{}', None]
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self, TypeVar, cast

import redis
import redis.exceptions as rex
from pydantic import Field, model_validator
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, LoadBalancingStrategy, RedisCluster
from redis.crc import key_slot
from redis.retry import Retry

from geoshard.errors import BackendError, BackendUnavailableError, DurabilityError
from geoshard.keys import DataKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.storage.base import MAX_VALUE_BYTES, BackendConfig, HotStore, prepare_writes
from geoshard.storage.keylayout import ShardOf, default_shard_of, hot_key_name
from geoshard.storage.retry import ExponentialBackoff, RetryPolicy, RetryStats

__all__ = [
    "RETRYABLE_ERRORS",
    "RedisClusterHotStore",
    "RedisClusterHotStoreConfig",
    "RedisHotStore",
    "RedisHotStoreConfig",
    "ResendNeeded",
    "translate_redis_error",
]

T = TypeVar("T")

#: redis-py errors worth another attempt after a backoff: the node or the topology may
#: recover. :func:`translate_redis_error` turns them into the retryable
#: BackendUnavailableError. (MovedError subclasses AskError; BusyLoadingError subclasses
#: ConnectionError.)
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.ClusterDownError,
    rex.AskError,
    rex.TryAgainError,
    rex.SlotNotCoveredError,
    rex.ReadOnlyError,
)
#: Connection errors that another attempt will not fix.
_NEVER_RETRY: tuple[type[BaseException], ...] = (rex.AuthenticationError, rex.AuthorizationError)
#: What a give-up message tells the operator.
_RETRY_HINT = "Check that the Redis nodes are up (geoshard status) or raise the retry budget"


def translate_redis_error(exc: BaseException, *, node: str, op: str) -> BackendError:
    """The taxonomy error for a redis-py error, to be raised ``from exc``.

    Args:
        exc: the redis-py exception.
        node: ``host:port`` (or a list) of the server involved.
        op: the operation, for the message (``GET k``, ``SET of 3 keys``).

    Returns:
        A retryable :class:`~geoshard.errors.BackendUnavailableError` for the errors in
        :data:`RETRYABLE_ERRORS` (except failed authentication or authorisation), else a
        final :class:`~geoshard.errors.BackendError`.

    Examples:
        >>> translate_redis_error(rex.TimeoutError("slow"), node="10.0.0.1:7000", op="GET k")
        BackendUnavailableError('redis 10.0.0.1:7000: GET k failed: TimeoutError: slow')
        >>> translate_redis_error(rex.ResponseError("WRONGTYPE"), node="n:1", op="GET k").retryable
        False
    """
    message = f"redis {node}: {op} failed: {type(exc).__name__}: {exc}"
    if isinstance(exc, RETRYABLE_ERRORS) and not isinstance(exc, _NEVER_RETRY):
        return BackendUnavailableError(message)
    return BackendError(message)


# --------------------------------------------------------------------------- configs


class _RedisStoreConfig(BackendConfig):
    """Settings shared by both Redis stores."""

    namespace: str = Field(
        default="", pattern=r"^[A-Za-z0-9_.\-]*$", description="optional key prefix (no braces)"
    )
    socket_timeout_s: float = Field(default=1.0, gt=0, description="per-command socket timeout")
    connect_timeout_s: float = Field(default=1.0, gt=0, description="TCP connect timeout")
    max_attempts: int = Field(default=10, ge=1, description="attempts per operation")
    retry_budget_s: float = Field(
        default=10.0, gt=0, description="total seconds per operation, backoff included"
    )
    backoff_base_s: float = Field(default=0.02, gt=0, description="first backoff delay")
    backoff_cap_s: float = Field(default=1.0, gt=0, description="largest backoff delay")
    batch_size: int = Field(default=1000, gt=0, description="keys per MGET in get_many")
    durable_writes: bool = Field(
        default=False, description="acknowledge a write only after WAIT confirms it"
    )
    wait_replicas: int = Field(default=1, ge=0, description="replicas WAIT must hear from")
    wait_timeout_ms: int = Field(
        default=100, gt=0, description="WAIT timeout; 0 (block forever) is refused"
    )
    max_value_bytes: int = Field(default=MAX_VALUE_BYTES, gt=0, description="largest value")

    def retry_policy(self) -> RetryPolicy:
        """The :class:`~geoshard.storage.retry.RetryPolicy` these settings describe."""
        return RetryPolicy(
            max_attempts=self.max_attempts,
            budget_s=self.retry_budget_s,
            backoff=ExponentialBackoff(base_s=self.backoff_base_s, cap_s=self.backoff_cap_s),
        )


class RedisHotStoreConfig(_RedisStoreConfig):
    """Config of :class:`RedisHotStore` (``type: redis``): one standalone server.

    Attributes:
        url: ``redis://host:port/db``.
    """

    type: Literal["redis"] = "redis"
    url: str = Field(
        default="redis://127.0.0.1:6379/0",
        pattern=r"^rediss?://",
        description="redis://host:port/db",
    )


class RedisClusterHotStoreConfig(_RedisStoreConfig):
    """Config of :class:`RedisClusterHotStore` (``type: redis_cluster``).

    Attributes:
        startup_nodes: ``host:port`` of one or more nodes; the rest are discovered.
        read_from_replicas: serve reads round-robin from replicas (possibly stale).
        require_full_coverage: refuse to start while some slot has no primary.
    """

    type: Literal["redis_cluster"] = "redis_cluster"
    startup_nodes: list[str] = Field(min_length=1, description="host:port of seed nodes")
    read_from_replicas: bool = False
    require_full_coverage: bool = True

    @model_validator(mode="after")
    def _nodes(self) -> RedisClusterHotStoreConfig:
        for node in self.startup_nodes:
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"startup node '{node}' must be 'host:port' such as '127.0.0.1:7000'"
                )
        return self


# --------------------------------------------------------------------------- helpers


def _px(ttl_s: float | None) -> tuple[Any, ...]:
    return () if ttl_s is None else ("PX", max(1, round(ttl_s * 1000)))


def _ttl_from_pttl(pttl: int) -> float | None:
    return None if pttl < 0 else pttl / 1000.0


def _chunks(seq: Sequence[T], n: int) -> list[Sequence[T]]:
    return [seq[i : i + n] for i in range(0, len(seq), n)]


#: KEYS[1] is deleted only while it holds ARGV[1]; the script runs atomically on the server.
_DEL_IF_EQUAL = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('DEL', KEYS[1]) else return 0 end"
)


class _RedisStoreBase(HotStore):
    """What both Redis stores share: config, key layout, the retry policy and the error map."""

    config: _RedisStoreConfig

    def __init__(
        self,
        config: _RedisStoreConfig,
        *,
        region: str,
        residency: ResidencyPolicy | None,
        shard_of: ShardOf = default_shard_of,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(region, residency)
        self.config = config
        self._shard_of = shard_of
        self.retry = retry or config.retry_policy()
        self.retry_stats = RetryStats()

    def key_name(self, key: DataKey) -> str:
        """The Redis key of ``key`` (see :func:`~geoshard.storage.keylayout.hot_key_name`)."""
        return hot_key_name(key, self._shard_of, self.config.namespace)

    @property
    def address(self) -> str:
        """``host:port`` (or a comma-separated list) of the server(s)."""
        raise NotImplementedError

    def _run(self, fn: Callable[[], T], op: str) -> T:
        """Run ``fn`` under the retry policy, translating redis errors in every attempt."""

        def attempt() -> T:
            try:
                return fn()
            except (rex.RedisError, rex.RedisClusterException) as exc:
                raise translate_redis_error(exc, node=_node_of(exc) or self.address, op=op) from exc

        return self.retry.call(
            attempt, what=f"redis {self.address}: {op}", stats=self.retry_stats, hint=_RETRY_HINT
        )

    def _durability_check(self, node: str, acked: int) -> None:
        need = self.config.wait_replicas
        if acked < need:
            raise DurabilityError(
                f"redis {node}: durable write acknowledged by {acked} of {need} required "
                f"replica(s) within {self.config.wait_timeout_ms} ms; the write is applied "
                "on the primary but may be lost on failover (indeterminate). Check the "
                "replicas' master_link_status, or retry the write",
                node=node,
                acked=acked,
                required=need,
            )


def _node_of(exc: BaseException) -> str | None:
    conn = getattr(exc, "connection", None)
    if conn is None:
        return None
    name = getattr(conn, "name", None)
    if isinstance(name, str):
        return name
    host, port = getattr(conn, "host", None), getattr(conn, "port", None)
    return f"{host}:{port}" if host is not None else None


# --------------------------------------------------------------------------- standalone


class RedisHotStore(_RedisStoreBase):
    """The hot tier on one standalone ``redis-server`` (redis-py ``Redis``).

    ``get_many`` sends MGETs of ``batch_size`` keys in one pipeline; ``put_many`` sends
    one pipeline of ``SET key value [PX ms]`` (plus ``WAIT`` in durable mode). The
    client's own retries are off: :attr:`retry` is the only retry loop, so attempts and
    the time budget mean what they say.

    Args:
        config: the server URL and the shared settings.
        region: the region this store's data lives in.
        residency: the residency policy every write is checked against.
        shard_of: maps a key to its logical shard (hash tag); kept for layout parity
            with the cluster store.
        retry: overrides the policy built from ``config``.

    Raises:
        BackendError: the URL cannot be parsed.

    Examples:
        >>> store = RedisHotStore(RedisHotStoreConfig(url="redis://127.0.0.1:6379/0"),
        ...                       region="us-east", residency=None)   # doctest: +SKIP
    """

    config_model: ClassVar[type[BackendConfig]] = RedisHotStoreConfig
    config: RedisHotStoreConfig

    def __init__(
        self,
        config: RedisHotStoreConfig,
        *,
        region: str,
        residency: ResidencyPolicy | None,
        shard_of: ShardOf = default_shard_of,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(config, region=region, residency=residency, shard_of=shard_of, retry=retry)
        try:
            self._client = redis.Redis.from_url(
                config.url,
                socket_timeout=config.socket_timeout_s,
                socket_connect_timeout=config.connect_timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise BackendError(f"redis url '{config.url}' is invalid: {exc}") from None
        kw = self._client.connection_pool.connection_kwargs
        self._address = f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    @classmethod
    def from_config(
        cls,
        config: RedisHotStoreConfig,
        *,
        region: str,
        residency: ResidencyPolicy | None,
        shard_of: ShardOf = default_shard_of,
        retry: RetryPolicy | None = None,
    ) -> Self:
        """Build a store from its config (the registry's entry point); ``shard_of`` and
        ``retry`` as for the constructor."""
        return cls(config, region=region, residency=residency, shard_of=shard_of, retry=retry)

    @property
    def address(self) -> str:
        """``host:port`` of the server."""
        return self._address

    @property
    def client(self) -> redis.Redis:
        """The underlying redis-py client (for admin commands and tests)."""
        return self._client

    def get(self, key: DataKey) -> bytes | None:
        """The value, or None when absent or expired."""
        name = self.key_name(key)
        value = self._run(lambda: self._client.get(name), f"GET {name}")
        return cast("bytes | None", value)

    def get_many(self, keys: Sequence[DataKey]) -> list[bytes | None]:
        """Values in the order of ``keys`` (None for absent): MGETs in one pipeline."""
        names = [self.key_name(k) for k in keys]
        if not names:
            return []
        chunks = _chunks(names, self.config.batch_size)

        def run() -> list[bytes | None]:
            if len(chunks) == 1:
                return cast("list[bytes | None]", list(self._client.mget(chunks[0])))
            pipe = self._client.pipeline(transaction=False)
            for chunk in chunks:
                pipe.mget(chunk)
            out: list[bytes | None] = []
            for reply in pipe.execute():
                out.extend(reply)
            return out

        return self._run(run, f"MGET of {len(names)} keys")

    def put(self, key: DataKey, value: bytes, ttl_s: float | None = None) -> None:
        """Write one value (type, size, TTL and residency checked first)."""
        self.put_many([(key, value)], ttl_s)

    def put_many(self, items: Sequence[tuple[DataKey, bytes]], ttl_s: float | None = None) -> None:
        """Write many values in one pipeline; the batch is validated before any I/O.

        Raises:
            InputError: a malformed key, value or TTL (nothing written).
            ResidencyError: a personal key this region may not hold (nothing written).
            DurabilityError: durable mode and fewer replicas acked than required.
            BackendError: the server failed or was unreachable past the retry policy.
        """
        prepared, ttl = prepare_writes(
            self, items, ttl_s, max_value_bytes=self.config.max_value_bytes
        )
        if not prepared:
            return
        writes = [(self.key_name(k), v) for k, v in prepared]
        px = _px(ttl)
        durable = self.config.durable_writes

        def run() -> int | None:
            pipe = self._client.pipeline(transaction=False)
            for name, data in writes:
                pipe.execute_command("SET", name, data, *px)
            if durable:
                pipe.execute_command("WAIT", self.config.wait_replicas, self.config.wait_timeout_ms)
            replies = pipe.execute()
            return int(replies[-1]) if durable else None

        acked = self._run(run, f"SET of {len(writes)} keys")
        if durable:
            self._durability_check(self.address, int(acked or 0))

    def delete(self, key: DataKey) -> bool:
        """Delete; True when the key existed."""
        name = self.key_name(key)
        return bool(self._run(lambda: self._client.delete(name), f"DEL {name}"))

    def delete_if_equal(self, key: DataKey, value: bytes) -> bool:
        """Delete while the key holds ``value``: one Lua script, atomic on the server."""
        name = self.key_name(key)
        return bool(
            self._run(
                lambda: self._client.eval(_DEL_IF_EQUAL, 1, name, bytes(value)),
                f"compare-and-delete {name}",
            )
        )

    def ttl(self, key: DataKey) -> float | None:
        """Remaining TTL in seconds (PTTL); None when the key has none or is absent."""
        name = self.key_name(key)
        return _ttl_from_pttl(int(self._run(lambda: self._client.pttl(name), f"PTTL {name}")))

    def close(self) -> None:
        """Close the connection pool. Safe to call twice."""
        self._client.close()


# --------------------------------------------------------------------------- cluster


@dataclass
class _Cmd:
    """One command of a node pipeline and the batch positions it answers for."""

    idxs: list[int]
    args: tuple[Any, ...]
    asking: bool = False


class ResendNeeded(BackendUnavailableError):
    """Some commands of a cluster batch must be re-sent (moved, asked, node down).

    Raised inside the retry loop and retryable, so the policy re-runs the batch; the
    underlying errors are counted in :attr:`RetryStats.errors` by their own class names.
    """


class RedisClusterHotStore(_RedisStoreBase):
    """The hot tier on a Redis Cluster (``redis.cluster.RedisCluster`` from redis-py).

    Batches are split by node from the client's slot map: reads become one MGET per slot
    (keys of one logical shard share a slot thanks to the hash tag), writes one SET per
    key, and each node gets a single pipeline. Commands that come back MOVED, ASK,
    TRYAGAIN, CLUSTERDOWN or READONLY, or whose node is unreachable, are re-sent after a
    backoff under :attr:`retry` (MOVED and connection loss refresh the slot map first;
    ASK re-sends to the importing node with ``ASKING``); commands that succeeded are not
    repeated. redis-py's own cluster retries are off so the policy alone bounds attempts
    and time.

    Args:
        config: seed nodes and the shared settings.
        region: the region this store's data lives in.
        residency: the residency policy every write is checked against.
        shard_of: maps a key to its logical shard (the hash tag).
        retry: overrides the policy built from ``config``.

    Raises:
        BackendError: no seed node answered (with their addresses).

    Examples:
        >>> cfg = RedisClusterHotStoreConfig(startup_nodes=["127.0.0.1:7000"])
        >>> store = RedisClusterHotStore(cfg, region="eu-west", residency=None)  # doctest: +SKIP
    """

    config_model: ClassVar[type[BackendConfig]] = RedisClusterHotStoreConfig
    config: RedisClusterHotStoreConfig

    def __init__(
        self,
        config: RedisClusterHotStoreConfig,
        *,
        region: str,
        residency: ResidencyPolicy | None,
        shard_of: ShardOf = default_shard_of,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(config, region=region, residency=residency, shard_of=shard_of, retry=retry)
        self._address = ",".join(config.startup_nodes)
        self._lb = LoadBalancingStrategy.ROUND_ROBIN_REPLICAS if config.read_from_replicas else None
        nodes = [
            ClusterNode(n.rpartition(":")[0], int(n.rpartition(":")[2]))
            for n in config.startup_nodes
        ]

        def connect() -> RedisCluster:
            return RedisCluster(
                startup_nodes=nodes,
                retry=Retry(NoBackoff(), 0),
                require_full_coverage=config.require_full_coverage,
                load_balancing_strategy=self._lb,
                socket_timeout=config.socket_timeout_s,
                socket_connect_timeout=config.connect_timeout_s,
            )

        self._client: RedisCluster = self._run(connect, "connect")

    @classmethod
    def from_config(
        cls,
        config: RedisClusterHotStoreConfig,
        *,
        region: str,
        residency: ResidencyPolicy | None,
        shard_of: ShardOf = default_shard_of,
        retry: RetryPolicy | None = None,
    ) -> Self:
        """Build a store from its config (the registry's entry point); ``shard_of`` and
        ``retry`` as for the constructor."""
        return cls(config, region=region, residency=residency, shard_of=shard_of, retry=retry)

    @property
    def address(self) -> str:
        """The seed nodes, comma-separated."""
        return self._address

    @property
    def client(self) -> RedisCluster:
        """The underlying ``RedisCluster`` (for admin commands and tests)."""
        return self._client

    def slot_of(self, key: DataKey) -> int:
        """The cluster slot of ``key`` (CRC16 of its hash tag, mod 16384)."""
        return int(key_slot(self.key_name(key).encode()))

    # -- the batch engine -------------------------------------------------------------

    def _refresh(self) -> None:
        self.retry_stats.topology_refreshes += 1
        # On failure the next attempt fails and backs off again; the policy bounds it.
        with contextlib.suppress(rex.RedisError, rex.RedisClusterException):
            self._client.nodes_manager.initialize()

    def _node(self, name: str) -> ClusterNode:
        nm = self._client.nodes_manager
        node = nm.get_node(node_name=name)
        if node is None:
            host, _, port = name.rpartition(":")
            node = ClusterNode(host, int(port))
            nm.create_redis_connections([node])
            nm.nodes_cache[name] = node
        return node

    def _run_batch(
        self,
        names: Sequence[str],
        build: Callable[[list[int], dict[int, str], set[int]], dict[str, list[_Cmd]]],
        *,
        write: bool,
        op: str,
    ) -> list[Any]:
        """Send commands grouped per node; re-send only failed ones under the policy.

        ``build(pending, asking, split)`` returns ``node name -> commands`` for the pending
        batch positions; ``asking`` maps a position to the node an ASK redirected it to,
        ``split`` holds positions to send one key per command (after TRYAGAIN).
        """
        results: list[Any] = [None] * len(names)
        pending = list(range(len(names)))
        asking: dict[int, str] = {}
        split: set[int] = set()
        durable = write and self.config.durable_writes
        short: list[tuple[str, int]] = []

        def attempt() -> None:
            nonlocal pending
            failed: list[int] = []
            first: tuple[str, BaseException] | None = None
            refresh = False
            for node_name, cmds in build(pending, asking, split).items():
                try:
                    conn = self._client.get_redis_connection(self._node(node_name))
                    pipe = conn.pipeline(transaction=False)
                    for cmd in cmds:
                        if cmd.asking:
                            pipe.execute_command("ASKING")
                        pipe.execute_command(*cmd.args)
                    if durable:
                        pipe.execute_command(
                            "WAIT", self.config.wait_replicas, self.config.wait_timeout_ms
                        )
                    replies = pipe.execute(raise_on_error=False)
                except (rex.ConnectionError, rex.TimeoutError) as exc:
                    if isinstance(exc, _NEVER_RETRY):
                        raise
                    failed.extend(i for c in cmds for i in c.idxs)
                    first = first or (node_name, exc)
                    self.retry_stats.record_error(exc)
                    refresh = True
                    continue
                pos = 0
                for cmd in cmds:
                    pos += cmd.asking  # skip the ASKING reply
                    reply = replies[pos]
                    pos += 1
                    if isinstance(reply, rex.MovedError):
                        refresh = True
                    elif isinstance(reply, rex.AskError):
                        for i in cmd.idxs:
                            asking[i] = f"{reply.host}:{reply.port}"
                    elif isinstance(reply, rex.TryAgainError) and len(cmd.idxs) > 1:
                        # A multi-key MGET in a slot being migrated: resend key by key,
                        # each then gets its value or an ASK.
                        split.update(cmd.idxs)
                    elif isinstance(reply, RETRYABLE_ERRORS):
                        refresh = refresh or isinstance(
                            reply, (rex.ReadOnlyError, rex.ClusterDownError)
                        )
                    elif isinstance(reply, Exception):
                        raise translate_redis_error(reply, node=node_name, op=op) from reply
                    else:
                        for i in cmd.idxs:
                            asking.pop(i, None)
                        if cmd.args[0] == "MGET":
                            for i, value in zip(cmd.idxs, reply, strict=True):
                                results[i] = value
                        else:
                            results[cmd.idxs[0]] = reply
                        continue
                    failed.extend(cmd.idxs)
                    first = first or (node_name, reply)
                    self.retry_stats.record_error(reply)
                if durable:
                    acked = replies[-1]
                    if isinstance(acked, Exception):
                        failed.extend(i for c in cmds for i in c.idxs)
                        first = first or (node_name, acked)
                    elif int(acked) < self.config.wait_replicas:
                        short.append((node_name, int(acked)))
            pending = sorted(set(failed))
            if pending:
                if refresh:
                    self._refresh()
                where, err = first or ("?", None)
                raise ResendNeeded(
                    f"{len(pending)} of {len(names)} commands to re-send; first "
                    f"error at {where}: {type(err).__name__}: {err}"
                )

        self._run(attempt, op)
        if short:
            node, acked = min(short, key=lambda s: s[1])
            self._durability_check(node, acked)
        return results

    def _slot_node(self, name: str, read: bool) -> str:
        slot = key_slot(name.encode())
        try:
            node = self._client.nodes_manager.get_node_from_slot(
                slot, load_balancing_strategy=self._lb if read else None
            )
        except rex.SlotNotCoveredError:
            self._refresh()
            raise
        return str(node.name)

    # -- the contract -----------------------------------------------------------------

    def get(self, key: DataKey) -> bytes | None:
        """The value, or None when absent or expired."""
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[DataKey]) -> list[bytes | None]:
        """Values in the order of ``keys``: one pipeline per node, one MGET per slot."""
        names = [self.key_name(k) for k in keys]
        if not names:
            return []
        batch = self.config.batch_size

        def build(
            pending: list[int], asking: dict[int, str], split: set[int]
        ) -> dict[str, list[_Cmd]]:
            by_node: dict[str, dict[int, list[int]]] = {}
            out: dict[str, list[_Cmd]] = {}
            for i in pending:
                if i in asking:
                    out.setdefault(asking[i], []).append(_Cmd([i], ("GET", names[i]), asking=True))
                    continue
                node = self._slot_node(names[i], read=True)
                if i in split:
                    out.setdefault(node, []).append(_Cmd([i], ("GET", names[i])))
                    continue
                by_node.setdefault(node, {}).setdefault(key_slot(names[i].encode()), []).append(i)
            for node, slots in by_node.items():
                cmds = out.setdefault(node, [])
                for idxs in slots.values():
                    for chunk in _chunks(idxs, batch):
                        cmds.append(_Cmd(list(chunk), ("MGET", *[names[i] for i in chunk])))
            return out

        return self._run_batch(names, build, write=False, op=f"MGET of {len(names)} keys")

    def _per_key(
        self,
        names: Sequence[str],
        args_of: Callable[[int], tuple[Any, ...]],
        *,
        write: bool,
        read: bool,
        op: str,
    ) -> list[Any]:
        def build(
            pending: list[int], asking: dict[int, str], split: set[int]
        ) -> dict[str, list[_Cmd]]:
            out: dict[str, list[_Cmd]] = {}
            for i in pending:
                node = asking.get(i) or self._slot_node(names[i], read=read)
                out.setdefault(node, []).append(_Cmd([i], args_of(i), asking=i in asking))
            return out

        return self._run_batch(names, build, write=write, op=op)

    def put(self, key: DataKey, value: bytes, ttl_s: float | None = None) -> None:
        """Write one value (type, size, TTL and residency checked first)."""
        self.put_many([(key, value)], ttl_s)

    def put_many(self, items: Sequence[tuple[DataKey, bytes]], ttl_s: float | None = None) -> None:
        """Write many values, one pipeline per primary; validated before any I/O.

        Raises:
            InputError: a malformed key, value or TTL (nothing written).
            ResidencyError: a personal key this region may not hold (nothing written).
            DurabilityError: durable mode and a primary's WAIT got fewer acks than
                required (the lowest count is reported).
            BackendError: the cluster failed past the retry policy.
        """
        prepared, ttl = prepare_writes(
            self, items, ttl_s, max_value_bytes=self.config.max_value_bytes
        )
        if not prepared:
            return
        names = [self.key_name(k) for k, _ in prepared]
        px = _px(ttl)
        self._per_key(
            names,
            lambda i: ("SET", names[i], prepared[i][1], *px),
            write=True,
            read=False,
            op=f"SET of {len(names)} keys",
        )

    def delete(self, key: DataKey) -> bool:
        """Delete; True when the key existed (WAITs in durable mode, like a write)."""
        name = self.key_name(key)
        (n,) = self._per_key(
            [name], lambda i: ("DEL", name), write=True, read=False, op=f"DEL {name}"
        )
        return bool(n)

    def delete_if_equal(self, key: DataKey, value: bytes) -> bool:
        """Delete while the key holds ``value``: one Lua script on the key's primary."""
        name = self.key_name(key)
        data = bytes(value)
        (n,) = self._per_key(
            [name],
            lambda i: ("EVAL", _DEL_IF_EQUAL, 1, name, data),
            write=True,
            read=False,
            op=f"compare-and-delete {name}",
        )
        return bool(n)

    def ttl(self, key: DataKey) -> float | None:
        """Remaining TTL in seconds (PTTL on the primary); None when none or absent."""
        name = self.key_name(key)
        (pttl,) = self._per_key(
            [name], lambda i: ("PTTL", name), write=False, read=False, op=f"PTTL {name}"
        )
        return _ttl_from_pttl(int(pttl))

    def close(self) -> None:
        """Close every node connection. Safe to call twice."""
        self._client.close()
