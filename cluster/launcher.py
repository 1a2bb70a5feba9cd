"""``geoshard up / down``: run a spec's topology for real on one machine, on loopback.

For each region of the spec, :meth:`Launcher.up` starts:

* the hot tier: a Redis Cluster (``storage.hot``: 3 primaries x 1 replica by default,
  append-only file on), or a standalone primary with replicas;
* one ``redis-server`` per shared cache level (``caches.l2``, ``caches.regional``),
  LRU-evicting at a ``maxmemory`` sized from the level's capacity;
* Milvus Lite as a gRPC server on its own data dir (unless ``storage.vector.uri`` names a
  Milvus server);
* a Parquet directory (the cold tier);
* the region worker (drains the write log to Parquet, ships writes to the other replica
  regions, demotes idle keys, exports the item-shard snapshot);
* the API: uvicorn with ``--workers`` from the spec, serving :mod:`geoshard.cluster.api`;

plus one catalog for the deployment (SQLite in the state dir, or the PostgreSQL URL of
``storage.catalog.url``) and one fault proxy between every ordered pair of regions
(:mod:`geoshard.cluster.proxy`). Ports come from a free-port allocator; pids, ports and
dirs go to ``state.json`` after each step (:mod:`geoshard.cluster.state`).

``up`` fails fast with a clear message (a missing ``redis-server``, a port taken, a
region not healthy in time, a catalog URL that does not answer) and then stops what it
had started. A second ``up`` on a running directory raises :class:`AlreadyRunningError`
(exit code 2). :meth:`Launcher.down` stops everything (each process group, checked by
pid), removes the state directory's contents, and is idempotent.

Examples:
    >>> launcher = Launcher(Path("/tmp/gs"))                      # doctest: +SKIP
    >>> state = launcher.up(Path("examples/local.yaml"))          # doctest: +SKIP
    >>> sorted(state.regions)                                      # doctest: +SKIP
    ['eu-central', 'eu-west', 'us-east']
    >>> launcher.down()                                            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from geoshard.cluster import procs
from geoshard.cluster.local.redis_procs import (
    RedisClusterProcs,
    RedisServer,
    redis_binary,
)
from geoshard.cluster.ports import PortAllocator, port_is_listening
from geoshard.cluster.procs import ProcessRecord
from geoshard.cluster.state import (
    ApiState,
    CacheServerState,
    DeploymentState,
    HotState,
    LinkState,
    ProxyState,
    RedisNodeState,
    RegionState,
    StateDir,
    VectorState,
)
from geoshard.errors import BackendError, ConfigError, GeoshardError
from geoshard.regions.network import NetworkModel
from geoshard.spec import Spec, load_spec

__all__ = ["AlreadyRunningError", "Launcher", "redis_client"]

#: Files and folders `up` creates in the state dir (what `down` removes).
_OWNED = (
    "state.json",
    ".state.json.tmp",
    "token",
    "spec.yaml",
    "proxy.json",
    "catalog.db",
    "catalog.db-wal",
    "catalog.db-shm",
    "catalog.db-journal",
    "regions",
    "logs",
)


class AlreadyRunningError(ConfigError):
    """``geoshard up`` on a directory whose deployment still runs (exit code 2)."""


def _cache_maxmemory(capacity_items: int | None, capacity_bytes: int | None, per_item: int) -> int:
    """``maxmemory`` of a cache server: the level's capacity with Redis' overhead, >= 8 MiB."""
    want = capacity_bytes * 2 if capacity_bytes else (capacity_items or 1) * per_item
    return max(8 << 20, int(want))


def redis_client(port: int, timeout_s: float = 0.5) -> redis.Redis:
    """A redis-py client for the loopback server on ``port``, without client retries."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def _python() -> str:
    return sys.executable


def _child_env(root: Path, region: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["GEOSHARD_DIR"] = str(root)
    # one BLAS thread per process: the API has many processes on few cores
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if region is not None:
        env["GEOSHARD_REGION"] = region
        env["PROMETHEUS_MULTIPROC_DIR"] = str(root / "regions" / region / "metrics")
    return env


def _http_get(
    port: int, path: str, timeout_s: float = 1.0, token: str | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _log_tail(path: str | Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    " + ln for ln in text)


class Launcher:
    """Starts, inspects and stops the deployment kept in one state directory.

    Args:
        root: the state directory (``--dir``).
        log: receives progress lines (the CLI prints them on stderr).
    """

    def __init__(self, root: Path, *, log: Callable[[str], None] | None = None) -> None:
        self.dir = StateDir(root)
        self._log = log or (lambda _m: None)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ helpers
    def _save(self, state: DeploymentState) -> None:
        with self._lock:
            self.dir.write_state(state)

    def load(self) -> tuple[Spec, DeploymentState]:
        """The running deployment's spec and state.

        Raises:
            ConfigError: no deployment in the directory.
        """
        state = self.dir.read_state()
        return load_spec(self.dir.spec_file), state

    # ------------------------------------------------------------------ up
    def up(self, spec_path: Path, *, api_workers: int | None = None) -> DeploymentState:
        """Start the topology of ``spec_path`` and wait until every region is healthy.

        Args:
            spec_path: the topology spec.
            api_workers: uvicorn workers per region; overrides ``deploy.api_workers`` and
                ``regions.<r>.api.workers``.

        Raises:
            AlreadyRunningError: a deployment already runs in the directory.
            SpecError: the spec does not validate.
            BackendError: a server could not start or did not become healthy; everything
                started is stopped first.
        """
        if api_workers is not None and api_workers <= 0:
            raise ConfigError(f"--api-workers(={api_workers}) must be > 0")
        spec = load_spec(spec_path)
        if self.dir.exists():
            old = self.dir.read_state()
            alive = old.alive()
            if alive:
                raise AlreadyRunningError(
                    f"a deployment is already running in {self.dir.root} ({len(alive)} "
                    f"processes, e.g. {alive[0].name} pid {alive[0].pid}); stop it with "
                    f"geoshard down --dir {self.dir.root} or use another --dir"
                )
            self._log(f"removing the stale state of a stopped deployment in {self.dir.root}")
            self._remove_owned()
        self._preflight(spec)
        started = time.monotonic()
        budget = spec.deploy.startup_timeout_s
        self.dir.root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spec_path, self.dir.spec_file)
        token = self.dir.write_token()
        url = spec.storage.catalog.url or f"sqlite:///{self.dir.root / 'catalog.db'}"
        state = DeploymentState(
            name=spec.name,
            spec_source=str(Path(spec_path).absolute()),
            created_at=time.time(),
            catalog_url=url,
        )
        ports = PortAllocator()
        try:
            self._plan(spec, state, ports, api_workers)
            self._save(state)
            with ThreadPoolExecutor(max_workers=len(spec.regions)) as pool:
                for fut in [pool.submit(self._start_storage, spec, state, r) for r in spec.regions]:
                    fut.result()
            self._log("catalog: migrating and registering the topology")
            self._init_catalog(spec, state)
            self._start_proxy(state, token)
            for r in spec.regions:
                self._start_worker(state, r)
                self._start_api(state, r)
            left = max(5.0, budget - (time.monotonic() - started))
            self._wait_apis(state, list(spec.regions), left)
            state.status = "running"
            self._save(state)
        except BaseException as exc:
            self._log(f"up failed: {exc}; stopping what was started")
            self._stop_all(state)
            self._remove_owned()
            if isinstance(exc, GeoshardError):
                raise
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise BackendError(f"geoshard up failed: {type(exc).__name__}: {exc}") from exc
        self._log(f"up: {len(spec.regions)} regions healthy in {time.monotonic() - started:.1f} s")
        return state

    def _preflight(self, spec: Spec) -> None:
        redis_binary("redis-server")
        redis_binary("redis-cli")
        if not spec.storage.vector.uri and importlib.util.find_spec("milvus_lite") is None:
            raise BackendError(
                "milvus-lite is not installed, and storage.vector.uri names no "
                "Milvus server; pip install 'geoshard[storage]'"
            )
        for mod in ("uvicorn", "fastapi", "prometheus_client"):
            if importlib.util.find_spec(mod) is None:
                raise BackendError(f"{mod} is not installed; pip install 'geoshard[serve]'")

    def _plan(
        self, spec: Spec, state: DeploymentState, ports: PortAllocator, api_workers: int | None
    ) -> None:
        """Give every component of every region its ports and directories."""
        h = spec.storage.hot
        for name, reg in spec.regions.items():
            rdir = self.dir.region_dir(name)
            n_nodes = h.primaries * (1 + h.replicas_per_primary)
            cluster = h.type == "redis_cluster"
            hot = HotState(
                type=h.type,
                nodes=[
                    RedisNodeState(
                        port=ports.take(f"{name} redis {i}", cluster_bus=cluster),
                        dir=str(rdir / "redis" / f"node-{i}"),
                    )
                    for i in range(n_nodes)
                ],
            )
            caches = {}
            for level in ("l2", "regional"):
                lv = getattr(spec.caches, level)
                if lv is None:
                    continue
                mm = _cache_maxmemory(
                    lv.capacity_items, lv.capacity_bytes, spec.storage.cache_servers.bytes_per_item
                )
                caches[level] = CacheServerState(
                    level=level,
                    maxmemory_bytes=mm,
                    port=ports.take(f"{name} cache {level}"),
                    dir=str(rdir / "caches" / level),
                    args=["--maxmemory", str(mm), "--maxmemory-policy", "allkeys-lru"],
                )
            if spec.storage.vector.uri:
                vector = VectorState(uri=spec.storage.vector.uri)
            else:
                port = ports.take(f"{name} milvus")
                vector = VectorState(
                    uri=f"http://127.0.0.1:{port}", port=port, dir=str(rdir / "milvus")
                )
            root = (
                spec.storage.cold.root.replace("{region}", name)
                if spec.storage.cold.root
                else str(rdir / "cold")
            )
            workers = api_workers or spec.deploy.api_workers or reg.api.workers
            state.regions[name] = RegionState(
                name=name,
                dir=str(rdir),
                hot=hot,
                caches=caches,
                vector=vector,
                cold_root=root,
                api=ApiState(port=ports.take(f"{name} api"), workers=workers),
            )
        net = NetworkModel.from_spec(spec)
        links = []
        for a in spec.regions:
            for b in spec.regions:
                if a != b:
                    api = state.regions[b].api
                    assert api is not None
                    links.append(
                        LinkState(
                            src=a,
                            dst=b,
                            port=ports.take(f"proxy {a}->{b}"),
                            upstream_port=api.port,
                            rtt_ms=net.rtt_ms(a, b),
                        )
                    )
        state.proxy = ProxyState(control_port=ports.take("proxy control"), links=links)

    # ------------------------------------------------------------------ storage
    def _hot_args(self, spec: Spec) -> list[str]:
        h = spec.storage.hot
        args = ["--appendonly", "yes" if h.appendonly else "no", "--appendfsync", h.appendfsync]
        if h.type == "redis":
            args += ["--repl-diskless-sync-delay", "0"]
        return args

    def _start_storage(self, spec: Spec, state: DeploymentState, region: str) -> None:
        """Start a region's Redis (hot tier and caches) and Milvus Lite.

        Raises:
            BackendError: naming the region and what failed.
        """
        try:
            self._start_region_storage(spec, state, region)
        except BackendError as exc:
            raise BackendError(f"region {region}: {exc}") from exc

    def _start_region_storage(self, spec: Spec, state: DeploymentState, region: str) -> None:
        st = state.regions[region]
        self._start_hot(spec, state, region)
        for level, srv in st.caches.items():
            server = RedisServer(
                port=srv.port, workdir=srv.dir, extra_args=srv.args, startup_timeout_s=30.0
            )
            server.start()
            srv.process = procs.record_of(
                server.pid or -1, f"{region}/cache-{level}", [], log=str(server.log_path)
            )
            self._save(state)
        if st.vector is not None and st.vector.port is not None:
            self._start_milvus(state, region)
        if "://" not in st.cold_root:
            Path(st.cold_root).mkdir(parents=True, exist_ok=True)
        self._log(f"{region}: redis, caches and milvus up")

    def _start_hot(self, spec: Spec, state: DeploymentState, region: str) -> None:
        st = state.regions[region]
        h = spec.storage.hot
        if h.type == "redis_cluster":
            cluster = RedisClusterProcs(
                primaries=h.primaries,
                replicas_per_primary=h.replicas_per_primary,
                node_timeout_ms=h.node_timeout_ms,
                extra_args=self._hot_args(spec),
                startup_timeout_s=spec.deploy.startup_timeout_s,
                root=Path(st.dir) / "redis",
                ports=[n.port for n in st.hot.nodes],
            )
            try:
                cluster.start()
            finally:
                # record whatever runs, even after a failed start (stop() already ran then)
                for node, ns in zip(cluster.nodes, st.hot.nodes, strict=False):
                    ns.args = list(node.extra_args)
                    if node.pid is not None:
                        ns.process = procs.record_of(
                            node.pid, f"{region}/redis-{node.port}", [], log=str(node.log_path)
                        )
                self._save(state)
            return
        primary, *replicas = st.hot.nodes
        for i, ns in enumerate(st.hot.nodes):
            args = self._hot_args(spec)
            if i:
                args += ["--replicaof", "127.0.0.1", str(primary.port)]
            ns.args = args
            server = RedisServer(port=ns.port, workdir=ns.dir, extra_args=args)
            server.start()
            ns.process = procs.record_of(
                server.pid or -1, f"{region}/redis-{ns.port}", [], log=str(server.log_path)
            )
            self._save(state)
        if replicas:
            self._wait(
                lambda: self._replicas_in_sync(primary.port, len(replicas)),
                30.0,
                f"{region}: redis replicas in sync with 127.0.0.1:{primary.port}",
            )

    @staticmethod
    def _replicas_in_sync(port: int, n: int) -> bool:
        client = redis_client(port)
        try:
            info = client.info("replication")
            return int(info.get("connected_slaves", 0)) >= n
        except Exception:  # noqa: BLE001 - not up yet: poll again
            return False
        finally:
            client.close()

    def _start_milvus(self, state: DeploymentState, region: str) -> None:
        st = state.regions[region]
        assert st.vector is not None and st.vector.port is not None
        Path(st.vector.dir).mkdir(parents=True, exist_ok=True)
        argv = [
            _python(),
            "-m",
            "milvus_lite",
            "server",
            "--data-dir",
            st.vector.dir,
            "--host",
            "127.0.0.1",
            "--port",
            str(st.vector.port),
        ]
        log = self.dir.logs_dir(region) / "milvus.log"
        st.vector.process = procs.spawn(
            argv, name=f"{region}/milvus", log=log, env=_child_env(self.dir.root, None)
        )
        self._save(state)
        port = st.vector.port
        rec = st.vector.process
        self._wait(
            lambda: port_is_listening("127.0.0.1", port) or not procs.is_alive(rec),
            60.0,
            f"{region}: Milvus Lite on 127.0.0.1:{port}",
        )
        if not procs.is_alive(rec):
            raise BackendError(
                f"{region}: Milvus Lite exited at startup (see {log}):\n{_log_tail(log)}"
            )

    def _init_catalog(self, spec: Spec, state: DeploymentState) -> None:
        from geoshard.storage.base import build_backend

        region = next(iter(spec.regions))
        catalog = build_backend(
            "catalog",
            {"type": spec.storage.catalog.type, "url": state.catalog_url},
            region=region,
            residency=None,
        )
        try:
            catalog.register_spec(spec)
        finally:
            catalog.close()
        # the vector tier: create each region's collection now, so a bad config fails `up`
        from geoshard.cluster.stores import open_region

        for r in spec.regions:
            stores = open_region(spec, state, r, vector=True, caches=False)
            stores.close()

    # ------------------------------------------------------------------ processes
    def _start_proxy(self, state: DeploymentState, token: str) -> None:
        assert state.proxy is not None
        cfg = {
            "control_port": state.proxy.control_port,
            "token_file": str(self.dir.token_file),
            "links": [lk.model_dump() for lk in state.proxy.links],
        }
        self.dir.proxy_file.write_text(json.dumps(cfg, indent=2))
        argv = [_python(), "-m", "geoshard.cluster.proxy", str(self.dir.proxy_file)]
        log = self.dir.logs_dir() / "proxy.log"
        state.proxy.process = procs.spawn(
            argv, name="proxy", log=log, env=_child_env(self.dir.root, None)
        )
        self._save(state)
        from geoshard.cluster.proxy import ProxyControl

        ctl = ProxyControl(state.proxy.control_port, token, timeout_s=0.5)
        rec = state.proxy.process
        self._wait(lambda: ctl.healthy() or not procs.is_alive(rec), 30.0, "the fault proxy")
        if not procs.is_alive(rec):
            raise BackendError(f"the fault proxy exited at startup (see {log}):\n{_log_tail(log)}")

    def _start_worker(self, state: DeploymentState, region: str) -> None:
        st = state.regions[region]
        metrics = Path(st.dir) / "metrics"
        if not (
            st.api is not None and st.api.process is not None and procs.is_alive(st.api.process)
        ):
            shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir(parents=True, exist_ok=True)
        argv = [_python(), "-m", "geoshard.cluster.worker"]
        st.worker = procs.spawn(
            argv,
            name=f"{region}/worker",
            log=self.dir.logs_dir(region) / "worker.log",
            env=_child_env(self.dir.root, region),
        )
        self._save(state)

    def _start_api(self, state: DeploymentState, region: str) -> None:
        st = state.regions[region]
        assert st.api is not None
        (Path(st.dir) / "metrics").mkdir(parents=True, exist_ok=True)
        argv = [
            _python(),
            "-m",
            "uvicorn",
            "geoshard.cluster.api.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(st.api.port),
            "--workers",
            str(st.api.workers),
            "--no-access-log",
            "--log-level",
            "warning",
            "--timeout-graceful-shutdown",
            "5",
        ]
        st.api.process = procs.spawn(
            argv,
            name=f"{region}/api",
            log=self.dir.logs_dir(region) / "api.log",
            env=_child_env(self.dir.root, region),
        )
        self._save(state)

    def _wait_apis(self, state: DeploymentState, regions: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(regions)
        while pending:
            for r in sorted(pending):
                st = state.regions[r]
                assert st.api is not None and st.api.process is not None
                for rec in (st.api.process, st.worker):
                    if rec is not None and not procs.is_alive(rec):
                        raise BackendError(
                            f"{r}: {rec.name} exited at startup (see {rec.log}):\n"
                            f"{_log_tail(rec.log)}"
                        )
                try:
                    code, body = _http_get(st.api.port, "/healthz", 1.0)
                    if code == 200 and json.loads(body).get("ok"):
                        pending.discard(r)
                        self._log(f"{r}: api healthy on {st.api.url} ({st.api.workers} workers)")
                except (OSError, ValueError):
                    pass
            if pending and time.monotonic() > deadline:
                r = sorted(pending)[0]
                api = state.regions[r].api
                assert api is not None and api.process is not None
                raise BackendError(
                    f"region {r} was not healthy within {timeout_s:.0f} s (api {api.url}/healthz); "
                    f"raise deploy.startup_timeout_s or see {api.process.log}:\n"
                    f"{_log_tail(api.process.log)}"
                )
            if pending:
                time.sleep(0.2)

    @staticmethod
    def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise BackendError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(0.1)

    # ------------------------------------------------------------------ down
    def _stop_all(self, state: DeploymentState) -> int:
        stopped = 0
        for rec in state.processes():
            with contextlib.suppress(Exception):
                stopped += procs.stop(rec)
        return stopped

    def _remove_owned(self) -> None:
        for name in _OWNED:
            p = self.dir.root / name
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        with contextlib.suppress(OSError):
            self.dir.root.rmdir()  # only when empty: never a user's own files

    def down(self) -> int:
        """Stop every process of the deployment and remove its files; idempotent.

        Returns:
            How many processes had to be stopped (0 when nothing ran).

        Raises:
            ConfigError: ``state.json`` exists but cannot be read; nothing is removed.
            BackendError: a process did not stop.
        """
        if not self.dir.exists():
            # no state.json: nothing of ours is recorded here, so nothing is removed (a
            # --dir such as ~ may hold a user's own logs/ or spec.yaml)
            with contextlib.suppress(OSError):
                self.dir.root.rmdir()  # only when empty
            return 0
        # an unreadable state file raises (exit 2): its processes may still run
        state = self.dir.read_state()
        state.status = "stopping"
        with contextlib.suppress(OSError):
            self._save(state)
        stopped = self._stop_all(state)
        left = state.alive()
        if left:
            raise BackendError(
                "some processes did not stop: " + ", ".join(f"{p.name} pid {p.pid}" for p in left)
            )
        self._remove_owned()
        return stopped

    # ------------------------------------------------------------------ one region
    def stop_region(self, region: str) -> None:
        """Stop every process of ``region`` (graceful: Redis flushes its AOF); the data stays."""
        _, state = self.load()
        st = self._region(state, region)
        for rec in st.processes():
            procs.stop(rec)
        self._log(f"{region}: stopped")

    def start_region(self, region: str, *, timeout_s: float = 90.0) -> None:
        """Start ``region`` again on its ports and data dirs (after :meth:`stop_region`).

        Raises:
            BackendError: a process did not start or the region was not healthy in time.
        """
        spec, state = self.load()
        st = self._region(state, region)
        for ns in st.hot.nodes:
            if ns.process is None or not procs.is_alive(ns.process):
                server = RedisServer(
                    port=ns.port,
                    workdir=ns.dir,
                    extra_args=ns.args,
                    cluster_bus=spec.storage.hot.type == "redis_cluster",
                    startup_timeout_s=timeout_s,
                )
                server.start()
                ns.process = procs.record_of(
                    server.pid or -1, f"{region}/redis-{ns.port}", [], log=str(server.log_path)
                )
        for level, srv in st.caches.items():
            if srv.process is None or not procs.is_alive(srv.process):
                server = RedisServer(port=srv.port, workdir=srv.dir, extra_args=srv.args)
                server.start()
                srv.process = procs.record_of(
                    server.pid or -1, f"{region}/cache-{level}", [], log=str(server.log_path)
                )
        self._save(state)
        if spec.storage.hot.type == "redis_cluster":
            self._wait(lambda: self._cluster_ok(st), timeout_s, f"{region}: cluster_state:ok")
        if (
            st.vector is not None
            and st.vector.port is not None
            and (st.vector.process is None or not procs.is_alive(st.vector.process))
        ):
            self._start_milvus(state, region)
        if st.worker is None or not procs.is_alive(st.worker):
            self._start_worker(state, region)
        assert st.api is not None
        if st.api.process is None or not procs.is_alive(st.api.process):
            self._start_api(state, region)
        self._wait_apis(state, [region], timeout_s)

    def stop_api(self, region: str, *, kill: bool = False) -> ProcessRecord:
        """Stop (or SIGKILL, as a crash) ``region``'s API; returns the record it had."""
        _, state = self.load()
        st = self._region(state, region)
        assert st.api is not None and st.api.process is not None
        rec = st.api.process
        if kill:
            procs.kill(rec)
        else:
            procs.stop(rec)
        return rec

    def start_api(self, region: str, *, timeout_s: float = 60.0) -> None:
        """Start ``region``'s API again on its port and wait until it is healthy."""
        _, state = self.load()
        st = self._region(state, region)
        self._start_api(state, region)
        self._wait_apis(state, [region], timeout_s)
        assert st.api is not None

    @staticmethod
    def _region(state: DeploymentState, region: str) -> RegionState:
        if region not in state.regions:
            from geoshard.errors import did_you_mean

            raise ConfigError(
                f"region '{region}' is not in the deployment{did_you_mean(region, state.regions)}"
            )
        return state.regions[region]

    @staticmethod
    def _cluster_ok(st: RegionState) -> bool:
        for ns in st.hot.nodes:
            client = redis_client(ns.port)
            try:
                info = client.execute_command("CLUSTER INFO")
                if dict(info).get("cluster_state") != "ok":
                    return False
            except Exception:  # noqa: BLE001 - a node still loading: poll again
                return False
            finally:
                client.close()
        return True
