"""Real ``redis-server`` processes on loopback: one standalone server or a Redis Cluster.

Used by the test fixtures, the benchmarks and ``geoshard up``. Every process runs in its
own working directory under a temp dir, on a free loopback port (and, for cluster nodes,
a free cluster-bus port ``port + 10000``), with persistence off unless asked for. Every
wait is bounded both in attempts and in seconds, and :meth:`RedisClusterProcs.stop`
kills every process it started, whatever state the cluster is in.

Examples:
    >>> with RedisServer() as server:                       # doctest: +SKIP
    ...     server.client().set("k", "v")
    >>> with RedisClusterProcs(primaries=3, replicas_per_primary=1) as cluster:  # doctest: +SKIP
    ...     cluster.startup_nodes
    ['127.0.0.1:40001', '127.0.0.1:40002', ...]
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from geoshard.errors import BackendError, ConfigError

if TYPE_CHECKING:
    import redis

__all__ = [
    "CLUSTER_BUS_OFFSET",
    "RedisClusterProcs",
    "RedisServer",
    "find_free_port",
    "redis_binary",
]

#: Redis Cluster's node-to-node bus listens on the client port plus this offset.
CLUSTER_BUS_OFFSET = 10000
_INSTALL_HINT = "install it: apt-get install -y redis-server"


def redis_binary(name: str = "redis-server") -> str:
    """The absolute path of a Redis binary on PATH.

    Args:
        name: ``redis-server`` or ``redis-cli``.

    Raises:
        BackendError: the binary is not on PATH.
    """
    path = shutil.which(name)
    if path is None:
        raise BackendError(f"{name} not found on PATH; {_INSTALL_HINT}")
    return path


def _port_is_free(host: str, port: int) -> bool:
    if not 0 < port < 65536:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def find_free_port(
    host: str = "127.0.0.1",
    *,
    cluster_bus: bool = False,
    exclude: Sequence[int] = (),
    attempts: int = 200,
) -> int:
    """A port that is free on ``host`` now (the OS picks it by binding to port 0).

    Another process can still take it before the server binds; :class:`RedisServer`
    retries on a fresh port when that happens.

    Args:
        host: the loopback address to bind.
        cluster_bus: also require ``port + 10000`` (the cluster bus) to be free.
        exclude: ports already handed out and not to be returned again.
        attempts: how many candidates to try before giving up.

    Raises:
        BackendError: no suitable port found in ``attempts`` tries.
    """
    excluded = set(exclude)
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port in excluded:
            continue
        if cluster_bus:
            bus = port + CLUSTER_BUS_OFFSET
            if bus >= 65536 or bus in excluded or not _port_is_free(host, bus):
                continue
        return port
    raise BackendError(
        f"no free port on {host} after {attempts} tries"
        f"{' (with a free cluster-bus port)' if cluster_bus else ''}; "
        "free some ports or narrow the ephemeral range"
    )


def _redis_client(host: str, port: int, timeout_s: float) -> redis.Redis:
    try:
        import redis
    except ImportError:  # pragma: no cover - the storage extra is missing
        raise BackendError("redis-py is not installed; pip install 'geoshard[storage]'") from None
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No client-side retries: the callers' wait loops are the only (bounded) retry.
    return redis.Redis(
        host=host,
        port=port,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def _wait_until(
    check: Callable[[], bool], *, timeout_s: float, interval_s: float, what: str
) -> None:
    """Poll ``check`` until it returns True; bounded by count and by time."""
    deadline = time.monotonic() + timeout_s
    max_polls = max(1, int(timeout_s / interval_s) + 1)
    for _ in range(max_polls):
        if check():
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(interval_s)
    if check():
        return
    raise BackendError(f"timed out after {timeout_s:.1f} s waiting for {what}")


class RedisServer:
    """One ``redis-server`` process on a free loopback port, in its own directory.

    Persistence is off (``save ""``, no AOF) unless ``extra_args`` turn it on. The
    process is started in its own process group so a signal never reaches the caller.

    Args:
        host: the address to bind (loopback by default).
        port: a fixed port, or None to pick a free one (retried if another process
            takes it first).
        workdir: the server's directory; by default a fresh temp dir removed on
            :meth:`stop`.
        extra_args: more ``redis-server`` options, for example ``["--appendonly", "yes"]``.
        cluster_bus: the port must also have a free cluster-bus port (cluster nodes).
        startup_timeout_s: how long :meth:`start` waits for the server to answer PING.

    Raises:
        BackendError: ``redis-server`` is not on PATH.

    Examples:
        >>> with RedisServer() as server:            # doctest: +SKIP
        ...     server.client().ping()
        True
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        workdir: str | Path | None = None,
        extra_args: Sequence[str] = (),
        cluster_bus: bool = False,
        startup_timeout_s: float = 10.0,
    ) -> None:
        if startup_timeout_s <= 0:
            raise ConfigError(f"startup_timeout_s(={startup_timeout_s}) must be > 0.")
        self.binary = redis_binary("redis-server")
        self.host = host
        self._fixed_port = port
        self.port: int = port or 0
        self.extra_args = list(extra_args)
        self.cluster_bus = cluster_bus
        self.startup_timeout_s = startup_timeout_s
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    # -- properties ------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``redis://host:port/0``."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The process id while running, else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the process is alive (a paused process counts as running)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        assert self.workdir is not None, "the server was never started"
        return self.workdir / "redis.log"

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server log ('' when there is none)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AssertionError):
            return ""

    # -- lifecycle -------------------------------------------------------------------

    def _argv(self) -> list[str]:
        assert self.workdir is not None
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.workdir),
            "--logfile",
            "redis.log",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            *self.extra_args,
        ]

    def start(self) -> RedisServer:
        """Start the process and wait until it answers PING.

        Returns:
            self, for chaining.

        Raises:
            BackendError: the process exited early (the log tail is in the message) or
                did not answer within ``startup_timeout_s``.
        """
        if self.running:
            return self
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="geoshard-redis-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        tries = 1 if self._fixed_port else 3
        last = ""
        for _ in range(tries):
            if not self._fixed_port:
                self.port = find_free_port(self.host, cluster_bus=self.cluster_bus)
            self._proc = subprocess.Popen(
                self._argv(),
                cwd=self.workdir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                self._wait_ping()
                return self
            except BackendError as exc:
                last = str(exc)
                self._terminate()
                if "(port in use)" not in last:
                    break
        self.stop()  # removes our temp dir: a failed start leaves nothing behind
        raise BackendError(last)

    def _wait_ping(self) -> None:
        client = _redis_client(self.host, self.port, timeout_s=0.5)
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            for _ in range(int(self.startup_timeout_s / 0.02) + 1):
                if self._proc is None or self._proc.poll() is not None:
                    tail = self.log_tail()
                    in_use = " (port in use)" if "Address already in use" in tail else ""
                    raise BackendError(
                        f"redis-server on {self.address} exited at startup{in_use} "
                        f"(see {self.log_path}):\n{tail}"
                    )
                try:
                    if client.ping():
                        return
                except Exception:  # noqa: BLE001, S110 - not up yet; any error means poll again
                    pass
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.02)
        finally:
            client.close()
        if self._proc is not None and self._proc.poll() is not None:
            return self._wait_ping()  # it exited meanwhile: report that, with the log
        raise BackendError(
            f"redis-server on {self.address} did not answer PING within "
            f"{self.startup_timeout_s:.1f} s (see {self.log_path})"
        )

    def _terminate(self, sig: int = signal.SIGTERM, wait_s: float = 5.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if self._paused:
                self._signal(signal.SIGCONT)
            try:
                proc.send_signal(sig)
                proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=wait_s)
            except ProcessLookupError:
                pass
        self._paused = False

    def _signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, sig)

    def stop(self, *, keep_dir: bool = False) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove its temp dir.

        Safe to call twice, and on a server that was never started or was killed.

        Args:
            keep_dir: keep the working directory (for a later :meth:`start` on the same
                port, for example a cluster node that must rejoin with its nodes.conf).
        """
        self._terminate()
        self._proc = None
        if self._own_dir and self.workdir is not None and not keep_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def kill(self) -> None:
        """SIGKILL the process, as a crash would (chaos). The directory is kept."""
        self._terminate(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP the process: it holds its connections but answers nothing (chaos)."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused process."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def restart(self) -> RedisServer:
        """Start the process again on the same port and directory (after :meth:`kill`)."""
        self._terminate()
        self._fixed_port = self.port
        return self.start()

    def client(self, timeout_s: float = 2.0) -> redis.Redis:
        """A new redis-py client for this server (the caller closes it)."""
        return _redis_client(self.host, self.port, timeout_s)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RedisServer({self.address}, {state})"


class RedisClusterProcs:
    """A Redis Cluster of ``primaries x (1 + replicas_per_primary)`` local processes.

    :meth:`start` launches the nodes with ``--cluster-enabled yes``, joins them with
    ``redis-cli --cluster create ... --cluster-replicas R --cluster-yes``, then waits
    until every node reports ``cluster_state:ok`` and every replica's link to its
    primary is up (a fault injected before the initial sync finishes hides failover
    problems; reliability-anchors §1.4).

    Args:
        primaries: number of primaries (at least 3, the Redis Cluster minimum).
        replicas_per_primary: replicas per primary.
        host: the loopback address every node binds.
        node_timeout_ms: ``cluster-node-timeout``; failover takes about this plus 1-5 s.
        extra_args: more ``redis-server`` options for every node.
        startup_timeout_s: bound on the whole :meth:`start` (processes, create, sync).
        root: the directory that holds one sub-directory per node (kept by :meth:`stop`);
            by default a fresh temp dir that :meth:`stop` removes.
        ports: fixed client ports of the nodes, in start order (each with a free
            cluster-bus port); by default free ports are picked.

    Raises:
        ConfigError: fewer than 3 primaries, negative replicas or a node timeout <= 0.
        BackendError: ``redis-server`` or ``redis-cli`` is not on PATH.

    Examples:
        >>> with RedisClusterProcs() as cluster:                  # doctest: +SKIP
        ...     len(cluster.nodes), cluster.startup_nodes[0]
        (6, '127.0.0.1:40001')
    """

    def __init__(
        self,
        *,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        host: str = "127.0.0.1",
        node_timeout_ms: int = 2000,
        extra_args: Sequence[str] = (),
        startup_timeout_s: float = 60.0,
        root: str | Path | None = None,
        ports: Sequence[int] | None = None,
    ) -> None:
        if primaries < 3:
            raise ConfigError(
                f"primaries(={primaries}) must be >= 3; Redis Cluster needs "
                "a majority of at least 3 primaries"
            )
        if replicas_per_primary < 0:
            raise ConfigError(f"replicas_per_primary(={replicas_per_primary}) must be >= 0.")
        if node_timeout_ms <= 0:
            raise ConfigError(f"node_timeout_ms(={node_timeout_ms}) must be > 0.")
        self.cli = redis_binary("redis-cli")
        redis_binary("redis-server")
        self.primaries = primaries
        self.replicas_per_primary = replicas_per_primary
        self.host = host
        self.node_timeout_ms = node_timeout_ms
        self.extra_args = list(extra_args)
        self.startup_timeout_s = startup_timeout_s
        total = primaries * (1 + replicas_per_primary)
        if ports is not None and len(ports) != total:
            raise ConfigError(
                f"ports gives {len(ports)} ports for {total} nodes; give one per node"
            )
        self._ports = list(ports) if ports is not None else None
        self._own_root = root is None
        self.root: Path | None = Path(root) if root is not None else None
        self.nodes: list[RedisServer] = []
        self._why = ""

    @property
    def startup_nodes(self) -> list[str]:
        """``host:port`` of every node, in start order."""
        return [n.address for n in self.nodes]

    def start(self) -> RedisClusterProcs:
        """Start every node, create the cluster and wait until it is healthy.

        On any failure every process is stopped before the error propagates.

        Raises:
            BackendError: a node failed to start, ``redis-cli --cluster create`` failed
                (its output is in the message), or the cluster did not become healthy in
                time.
        """
        deadline = time.monotonic() + self.startup_timeout_s
        if self._own_root or self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="geoshard-rcluster-"))
        else:
            self.root.mkdir(parents=True, exist_ok=True)
        total = self.primaries * (1 + self.replicas_per_primary)
        try:
            used: list[int] = []
            for i in range(total):
                port = (
                    self._ports[i]
                    if self._ports is not None
                    else find_free_port(self.host, cluster_bus=True, exclude=used)
                )
                used += [port, port + CLUSTER_BUS_OFFSET]
                node = RedisServer(
                    host=self.host,
                    port=port,
                    workdir=self.root / f"node-{i}",
                    cluster_bus=True,
                    startup_timeout_s=max(1.0, deadline - time.monotonic()),
                    extra_args=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        str(self.node_timeout_ms),
                        "--repl-diskless-sync-delay",
                        "0",
                        "--appendonly",
                        "no",
                        *self.extra_args,
                    ],
                )
                self.nodes.append(node)
                node.start()
            self._create(max(1.0, deadline - time.monotonic()))
            self.wait_healthy(timeout_s=max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self, timeout_s: float) -> None:
        argv = [
            self.cli,
            "--cluster",
            "create",
            *self.startup_nodes,
            "--cluster-replicas",
            str(self.replicas_per_primary),
            "--cluster-yes",
        ]
        try:
            out = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise BackendError(
                f"redis-cli --cluster create did not finish within {timeout_s:.1f} s"
            ) from None
        if out.returncode != 0 or "[OK] All 16384 slots covered" not in out.stdout:
            raise BackendError(
                f"redis-cli --cluster create failed (exit {out.returncode}):\n"
                f"{out.stdout[-2000:]}{out.stderr[-2000:]}"
            )

    def _node_info(self, node: RedisServer, section: str) -> dict[str, Any]:
        client = node.client(timeout_s=1.0)
        try:
            if section == "cluster":
                return dict(client.execute_command("CLUSTER INFO"))
            return dict(client.info(section))
        finally:
            client.close()

    def _healthy(self, nodes: Sequence[RedisServer]) -> bool:
        try:
            for node in nodes:
                state = self._node_info(node, "cluster").get("cluster_state")
                if state != "ok":
                    self._why = f"{node.address} cluster_state:{state}"
                    return False
                repl = self._node_info(node, "replication")
                if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                    self._why = (
                        f"{node.address} master_link_status:{repl.get('master_link_status')}"
                    )
                    return False
            masters = {n.address for n in nodes if self.role(n) == "master"}
            self._why = f"{len(masters)} masters of {self.primaries}"
            if len(masters) < self.primaries:
                return False
            # Every node must also *know* the replicas (gossip lags the replication
            # link), or clients that load CLUSTER SLOTS from it see no replicas.
            want = 1 + min(
                self.replicas_per_primary, (len(nodes) - self.primaries) // self.primaries
            )
            for node in nodes:
                client = node.client(timeout_s=1.0)
                try:
                    ranges = client.execute_command("CLUSTER SLOTS")
                finally:
                    client.close()
                thin = [r for r in ranges if len(r) - 2 < want]
                if thin:
                    self._why = (
                        f"{node.address} lists {len(thin[0]) - 2} of {want} nodes for "
                        f"slots {thin[0][0]}-{thin[0][1]}"
                    )
                    return False
            return True
        except Exception as exc:  # noqa: BLE001 - a node not ready yet: poll again
            self._why = f"{type(exc).__name__}: {exc}"
            return False

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Wait until every running node says ``cluster_state:ok`` and every replica's
        ``master_link_status`` is ``up``.

        Raises:
            BackendError: not healthy within ``timeout_s``.
        """
        running = [n for n in self.nodes if n.running]
        self._why = ""
        try:
            _wait_until(
                lambda: self._healthy(running),
                timeout_s=timeout_s,
                interval_s=0.1,
                what=f"cluster_state:ok and replicas in sync on {len(running)} nodes",
            )
        except BackendError as exc:
            raise BackendError(f"{exc} (last seen: {self._why})") from None

    def role(self, node: RedisServer) -> str:
        """``master`` or ``slave``, as the node reports it (INFO replication)."""
        return str(self._node_info(node, "replication").get("role", "unknown"))

    def primary_nodes(self) -> list[RedisServer]:
        """Running nodes that currently report the ``master`` role."""
        return [n for n in self.nodes if n.running and self.role(n) == "master"]

    def replica_nodes(self) -> list[RedisServer]:
        """Running nodes that currently report the ``slave`` role."""
        return [n for n in self.nodes if n.running and self.role(n) == "slave"]

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        """Running replicas whose master is ``primary``."""
        out = []
        for node in self.replica_nodes():
            repl = self._node_info(node, "replication")
            if (repl.get("master_host"), int(repl.get("master_port", -1))) == (
                primary.host,
                primary.port,
            ):
                out.append(node)
        return out

    def node_for_slot(self, slot: int) -> RedisServer:
        """The running node that serves ``slot`` as primary, per CLUSTER SLOTS.

        Raises:
            BackendError: no running node answers or none serves the slot.
        """
        by_addr = {n.address: n for n in self.nodes}
        for node in self.nodes:
            if not node.running:
                continue
            client = node.client(timeout_s=1.0)
            try:
                for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end:
                        host = primary[0].decode() if isinstance(primary[0], bytes) else primary[0]
                        return by_addr[f"{host}:{int(primary[1])}"]
            except Exception:  # noqa: BLE001, S112 - try the next node
                continue
            finally:
                client.close()
        raise BackendError(f"no running node reports a primary for slot {slot}")

    def _slots_of(self, node: RedisServer) -> list[int]:
        """First slot of every range ``node`` served, from its own nodes.conf (works after a kill)."""
        assert node.workdir is not None
        for line in (node.workdir / "nodes.conf").read_text().splitlines():
            fields = line.split()
            if len(fields) > 8 and "myself" in fields[2]:
                return [int(r.split("-")[0]) for r in fields[8:] if not r.startswith("[")]
        return []

    def wait_failover(self, killed: RedisServer, timeout_s: float = 30.0) -> RedisServer:
        """After ``killed`` (a primary) died, wait until a running node serves its slots and
        every running node reports ``cluster_state:ok``.

        Returns:
            The promoted node.

        Raises:
            BackendError: ``killed`` served no slots, or no promotion within ``timeout_s``.
        """
        slots = self._slots_of(killed)
        if not slots:
            raise BackendError(f"{killed.address} served no slots; nothing to fail over")
        survivors = [n for n in self.nodes if n is not killed and n.running]
        promoted: list[RedisServer] = []

        def done() -> bool:
            try:
                owner = self.node_for_slot(slots[0])
                if owner is killed or not owner.running:
                    return False
                for node in survivors:
                    if self._node_info(node, "cluster").get("cluster_state") != "ok":
                        return False
            except Exception:  # noqa: BLE001 - mid-election: poll again
                return False
            promoted[:] = [owner]
            return True

        _wait_until(
            done,
            timeout_s=timeout_s,
            interval_s=0.1,
            what=f"a replica to take over the slots of killed primary {killed.address}",
        )
        return promoted[0]

    def stop(self) -> None:
        """Kill every process (SIGCONT first if paused) and remove the temp dir. Idempotent."""
        errors: list[str] = []
        for node in self.nodes:
            try:
                node.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others regardless
                errors.append(f"{node.address}: {exc}")
        self.nodes = []
        if self.root is not None and self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        if errors:
            raise BackendError("some cluster nodes did not stop cleanly: " + "; ".join(errors))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"RedisClusterProcs({self.primaries}x{1 + self.replicas_per_primary}, "
            f"{len([n for n in self.nodes if n.running])} running)"
        )
