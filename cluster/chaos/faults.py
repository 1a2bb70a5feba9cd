"""The faults a chaos scenario injects into a running deployment, each with its heal.

Every fault acts on processes and links of the deployment in one state dir and nothing
else (loopback only): a Redis primary killed with SIGKILL, a region's processes
stopped, an API killed, a Redis primary cut off from its peers, a link of the fault
proxy cut or slowed. :meth:`Fault.heal` undoes it and returns once the deployment
took the repair (a restarted process answers); :meth:`Fault.cleanup` is the
idempotent last resort the runner calls in ``finally`` (also after Ctrl-C).

Examples:
    >>> fault = KillPrimary(launcher, "eu-west", random.Random(1))   # doctest: +SKIP
    >>> fault.inject()                                               # doctest: +SKIP
    {'node': '127.0.0.1:40001', 'slots': '0-5460'}
    >>> fault.heal()                                                 # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import random
import time
from typing import Any

from geoshard.cluster import procs
from geoshard.cluster.chaos.partition import NodePartition, nft_available
from geoshard.cluster.launcher import Launcher, redis_client
from geoshard.cluster.proxy import ProxyControl
from geoshard.cluster.state import DeploymentState, RedisNodeState
from geoshard.errors import BackendError

__all__ = [
    "ApiCrash",
    "DrainCrash",
    "Fault",
    "KillPrimary",
    "LatencySpike",
    "MinorityPartition",
    "RegionOutage",
    "RegionPartition",
    "Surge",
    "cluster_primaries",
    "hot_tier_settled",
]


def cluster_primaries(state: DeploymentState, region: str) -> dict[int, str]:
    """The primaries of ``region``'s Redis Cluster that hold slots: port -> slot ranges.

    Asks every node in turn until one answers ``CLUSTER NODES``.

    Raises:
        BackendError: no node of the region answers.
    """
    for ns in state.regions[region].hot.nodes:
        client = redis_client(ns.port, timeout_s=1.0)
        try:
            text = client.execute_command("CLUSTER NODES")
        except Exception:  # noqa: BLE001 - a dead or paused node: ask the next one
            text = None
        finally:
            client.close()
        if text is None:
            continue
        if isinstance(text, bytes):
            text = text.decode()
        if isinstance(text, dict):  # redis-py may parse the reply into a mapping
            out: dict[int, str] = {}
            for addr, info in text.items():
                if "master" in info.get("flags", "") and "fail" not in info.get("flags", ""):
                    port = int(str(addr).split(":")[1].split("@")[0])
                    slots = info.get("slots") or []
                    if slots:
                        out[port] = ",".join("-".join(map(str, s)) for s in slots)
            return out
        out = {}
        for line in str(text).splitlines():
            parts = line.split()
            if len(parts) < 8 or "master" not in parts[2] or "fail" in parts[2]:
                continue
            if len(parts) > 8:
                out[int(parts[1].split("@")[0].rsplit(":", 1)[1])] = ",".join(parts[8:])
        return out
    raise BackendError(f"no Redis node of {region} answers CLUSTER NODES")


def hot_tier_settled(state: DeploymentState, region: str, replicas_per_primary: int) -> bool:
    """True when every node of ``region``'s cluster says ``cluster_state:ok`` and every
    primary holding slots has its replicas connected and in sync (equal offsets)."""
    for ns in state.regions[region].hot.nodes:
        client = redis_client(ns.port, timeout_s=1.0)
        try:
            if dict(client.execute_command("CLUSTER INFO")).get("cluster_state") != "ok":
                return False
            repl = client.info("replication")
            if repl.get("role") == "master" and int(repl.get("connected_slaves", 0)) > 0:
                links = [
                    v for k, v in repl.items() if k.startswith("slave") and isinstance(v, dict)
                ]
                if any(v.get("state") != "online" or int(v.get("lag", 0)) > 1 for v in links):
                    return False
            elif repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                return False
        except Exception:  # noqa: BLE001 - a node down or loading: not settled yet
            return False
        finally:
            client.close()
    primaries = cluster_primaries(state, region)
    if len(primaries) < 1:
        return False
    for port in primaries:
        client = redis_client(port, timeout_s=1.0)
        try:
            if int(client.info("replication").get("connected_slaves", 0)) < replicas_per_primary:
                return False
        except Exception:  # noqa: BLE001 - not settled yet
            return False
        finally:
            client.close()
    return True


class Fault:
    """A fault: :meth:`inject`, :meth:`heal`, :meth:`cleanup`.

    Args:
        launcher: the deployment's launcher (its state dir).
        region: the region the fault targets.
        rng: the run's seeded random source (which node, which link).
    """

    #: the scenario name
    name = "fault"

    def __init__(self, launcher: Launcher, region: str, rng: random.Random) -> None:
        self.launcher = launcher
        self.region = region
        self.rng = rng
        self.injected = False
        self.healed = False
        #: the run's load generator (the runner sets it; a surge changes its rate)
        self.load: Any = None

    def state(self) -> DeploymentState:
        """The deployment's current state (re-read: a heal may have restarted processes)."""
        return self.launcher.dir.read_state()

    def inject(self) -> dict[str, Any]:
        """Inject the fault; returns what it hit (for the report)."""
        raise NotImplementedError

    def heal(self) -> None:
        """Undo the fault and wait until the repaired parts answer."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Heal if injected and not healed yet; never raises (the runner's ``finally``)."""
        if self.injected and not self.healed:
            with contextlib.suppress(Exception):
                self.heal()


class KillPrimary(Fault):
    """``kill -9`` of a Redis primary of the region's cluster (seeded choice); healed by
    starting it again on its data dir (it rejoins as a replica of the promoted one)."""

    name = "kill-primary"

    def inject(self) -> dict[str, Any]:
        """Kill the chosen primary's process group with SIGKILL."""
        state = self.state()
        primaries = cluster_primaries(state, self.region)
        port = self.rng.choice(sorted(primaries))
        node = self._node(state, port)
        if node.process is None:
            raise BackendError(f"{self.region}: the node on port {port} has no recorded process")
        procs.kill(node.process)
        self.injected = True
        return {"node": f"127.0.0.1:{port}", "pid": node.process.pid, "slots": primaries[port]}

    def _node(self, state: DeploymentState, port: int) -> RedisNodeState:
        for ns in state.regions[self.region].hot.nodes:
            if ns.port == port:
                return ns
        raise BackendError(f"{self.region}: no recorded Redis node on port {port}")

    def heal(self) -> None:
        """Start the killed node again (and wait for ``cluster_state:ok``)."""
        self.launcher.start_region(self.region)
        self.healed = True


class MinorityPartition(KillPrimary):
    """A Redis primary of the region (seeded choice) cut off from every other node of its
    cluster (cluster bus and replication), while its clients still reach it: it keeps
    acknowledging writes until ``cluster-node-timeout``, its replica is promoted on the
    majority side, and on heal it rejoins as a replica. Without ``WAIT`` those
    acknowledged writes are lost (reliability-anchors §1.4); with it, they were never
    acknowledged. Needs root and nft (:mod:`~geoshard.cluster.chaos.partition`)."""

    name = "minority-partition"

    def __init__(self, launcher: Launcher, region: str, rng: random.Random) -> None:
        super().__init__(launcher, region, rng)
        self.cut: NodePartition | None = None

    def inject(self) -> dict[str, Any]:
        """Cut the chosen primary's address off from its peers' addresses."""
        why = nft_available()
        if why is not None:
            raise BackendError(f"minority-partition cannot run here: {why}")
        state = self.state()
        primaries = cluster_primaries(state, self.region)
        port = self.rng.choice(sorted(primaries))
        addr = {ns.port: _own_address(ns) for ns in state.regions[self.region].hot.nodes}
        if any(a is None for a in addr.values()):
            raise BackendError(
                f"the Redis nodes of {self.region} have no addresses of their own (started by "
                "an older geoshard); run geoshard down and geoshard up again"
            )
        victim = addr.pop(port)
        assert victim is not None
        self.cut = NodePartition(victim, [a for a in addr.values() if a is not None])
        self.injected = True
        self.cut.apply()
        return {"node": f"{victim}:{port}", "slots": primaries[port], "peers": self.cut.peers}

    def heal(self) -> None:
        """Remove the rules and wait until the cluster took the node back."""
        if self.cut is not None:
            self.cut.heal()
        self.launcher.start_region(self.region)
        self.healed = True

    def cleanup(self) -> None:
        """Remove the rules whatever happened; then heal as the base class does."""
        if self.cut is not None:
            self.cut.heal()
        super().cleanup()


def _own_address(ns: RedisNodeState) -> str | None:
    """The node's own loopback address (``--bind-source-addr`` of its options), if any."""
    args = ns.args
    for i, a in enumerate(args[:-1]):
        if a == "--bind-source-addr":
            return args[i + 1]
    return None


class RegionOutage(Fault):
    """Every process of the region stopped (API, worker, Milvus, caches, Redis); healed by
    starting the region again on its data (Redis replays its append-only files)."""

    name = "region-outage"

    def inject(self) -> dict[str, Any]:
        """Stop the region."""
        n = len(self.state().regions[self.region].processes())
        self.injected = True
        self.launcher.stop_region(self.region)
        return {"region": self.region, "processes": n}

    def heal(self) -> None:
        """Start the region again and wait until its API is healthy."""
        self.launcher.start_region(self.region, timeout_s=120.0)
        self.healed = True


class ApiCrash(Fault):
    """The region's API (uvicorn and its workers) killed with SIGKILL; healed by starting
    it again."""

    name = "api-crash"

    def inject(self) -> dict[str, Any]:
        """Kill the API's process group."""
        rec = self.launcher.stop_api(self.region, kill=True)
        self.injected = True
        return {"region": self.region, "pid": rec.pid}

    def heal(self) -> None:
        """Start the API again and wait until it is healthy."""
        self.launcher.start_api(self.region)
        self.healed = True


class DrainCrash(Fault):
    """The region worker (it drains the write log into Parquet and ships writes to the
    other regions) killed with SIGKILL while interactions flow; healed by starting it
    again: it resumes from its cursors, and nothing acknowledged may be lost."""

    name = "drain-crash"

    def inject(self) -> dict[str, Any]:
        """Kill the worker's process group."""
        rec = self.state().regions[self.region].worker
        if rec is None:
            raise BackendError(f"{self.region} has no recorded worker")
        procs.kill(rec)
        self.injected = True
        return {"region": self.region, "pid": rec.pid}

    def heal(self) -> None:
        """Start the worker again (the region's other processes are left as they are)."""
        self.launcher.start_region(self.region)
        self.healed = True


class Surge(Fault):
    """Three times the load, all of it entering the region first."""

    name = "surge"
    factor = 3.0

    def inject(self) -> dict[str, Any]:
        """Triple the load generator's rate."""
        if self.load is None:
            raise BackendError("surge needs the run's load generator")
        self.load.set_multiplier(self.factor)
        self.injected = True
        return {"region": self.region, "factor": self.factor}

    def heal(self) -> None:
        """Back to the configured rate."""
        if self.load is not None:
            self.load.set_multiplier(1.0)
        self.healed = True


class _ProxyFault(Fault):
    def _ctl(self) -> ProxyControl:
        state = self.state()
        if state.proxy is None:
            raise BackendError("the deployment has no fault proxy (state.json: proxy)")
        return ProxyControl(state.proxy.control_port, self.launcher.dir.read_token())

    def _peer(self) -> str:
        spec, state = self.launcher.load()
        home = spec.regions[self.region].jurisdiction
        others = sorted(r for r in state.regions if r != self.region)
        if not others:
            raise BackendError(f"{self.region} is the only region: nothing to cut it from")
        same = [r for r in others if spec.regions[r].jurisdiction == home]
        return self.rng.choice(same or others)

    def heal(self) -> None:
        """Clear every fault of the proxy."""
        self._ctl().heal()
        self.healed = True


class RegionPartition(_ProxyFault):
    """The fault proxy cuts the region from a peer region (both directions; seeded
    choice, same jurisdiction first)."""

    name = "region-partition"

    def inject(self) -> dict[str, Any]:
        """Partition the two regions."""
        peer = self._peer()
        self.injected = True
        self._ctl().partition(self.region, peer)
        return {"a": self.region, "b": peer}


class LatencySpike(_ProxyFault):
    """Every proxy link to and from the region delayed by ``delay_ms`` more."""

    name = "latency-spike"
    delay_ms = 250.0

    def inject(self) -> dict[str, Any]:
        """Slow every link of the region."""
        ctl = self._ctl()
        self.injected = True
        links = []
        for lk in ctl.links():
            if self.region in (lk["src"], lk["dst"]):
                ctl.set_link(lk["src"], lk["dst"], mode="ok", delay_ms=self.delay_ms)
                links.append(f"{lk['src']}->{lk['dst']}")
        return {"delay_ms": self.delay_ms, "links": links}


def wait_until(check: Any, timeout_s: float, poll_s: float = 0.2) -> bool:
    """Poll ``check()`` until it is true or ``timeout_s`` passed; True when it held."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            if check():
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
