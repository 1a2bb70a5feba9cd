"""``geoshard status``: the health of every component of a running deployment.

Reads ``state.json`` and asks each component directly (is the process alive, does the
port answer, Redis ``CLUSTER INFO`` / ``PING``, each API's ``/healthz``) and each
region's worker stats in its Redis (replication lag per target region, drained
interactions, demoted keys, heartbeat). Nothing here changes the deployment.

Examples:
    >>> report = deployment_status(StateDir(Path("/tmp/gs")))   # doctest: +SKIP
    >>> report["regions"]["eu-west"]["status"]                   # doctest: +SKIP
    'up'
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from typing import Any

import redis

from geoshard.cluster import procs
from geoshard.cluster.launcher import redis_client
from geoshard.cluster.ports import port_is_listening
from geoshard.cluster.procs import ProcessRecord
from geoshard.cluster.regionlog import region_tag
from geoshard.cluster.state import RegionState, StateDir

__all__ = ["deployment_status"]


def _pid(rec: ProcessRecord | None) -> int | None:
    return rec.pid if rec is not None else None


def _alive(rec: ProcessRecord | None) -> bool:
    return rec is not None and procs.is_alive(rec)


def _redis_node(port: int, rec: ProcessRecord | None, cluster: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"pid": _pid(rec), "ports": [port], "alive": _alive(rec)}
    if not row["alive"]:
        return {**row, "status": "down", "detail": "process not running"}
    client = redis_client(port)
    try:
        role = client.info("replication").get("role", "?")
        detail = f"role {role}"
        ok = True
        if cluster:
            cstate = dict(client.execute_command("CLUSTER INFO")).get("cluster_state")
            detail += f", cluster_state {cstate}"
            ok = cstate == "ok"
        return {**row, "status": "up" if ok else "degraded", "detail": detail}
    except (redis.RedisError, OSError) as exc:
        return {**row, "status": "down", "detail": f"{type(exc).__name__}: {exc}"}
    finally:
        client.close()


def _worker_stats(st: RegionState) -> dict[str, str]:
    """The worker's stats hash, read from any reachable hot-tier node."""
    key = f"{region_tag(st.name)}:stats"
    for ns in st.hot.nodes:
        if not _alive(ns.process):
            continue
        client = redis_client(ns.port)
        try:
            with contextlib.suppress(redis.RedisError, OSError):
                raw: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
                return {k.decode(): v.decode() for k, v in raw.items()}
        finally:
            client.close()
    return {}


def _api(st: RegionState) -> dict[str, Any]:
    api = st.api
    assert api is not None
    rec = api.process
    pids = procs.group_members(rec.pid) if _alive(rec) and rec is not None else []
    row: dict[str, Any] = {
        "pid": _pid(rec),
        "pids": sorted(pids),
        "ports": [api.port],
        "alive": _alive(rec),
        "url": api.url,
        "workers": api.workers,
    }
    if not row["alive"]:
        return {**row, "status": "down", "detail": "process not running"}
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=2.0)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        body = json.loads(resp.read() or b"{}")
        ok = resp.status == 200 and body.get("ok")
        return {
            **row,
            "status": "up" if ok else "degraded",
            "detail": f"{api.workers} workers, items {body.get('items', 0)}",
        }
    except (OSError, ValueError) as exc:
        return {**row, "status": "down", "detail": f"/healthz: {type(exc).__name__}: {exc}"}
    finally:
        conn.close()


def _region(st: RegionState, cluster: bool) -> dict[str, Any]:
    comps: dict[str, dict[str, Any]] = {}
    comps["api"] = _api(st)
    stats = _worker_stats(st)
    beat = float(stats.get("heartbeat", 0) or 0)
    age = time.time() - beat if beat else None
    w_ok = _alive(st.worker) and age is not None and age < 10
    comps["worker"] = {
        "pid": _pid(st.worker),
        "ports": [],
        "alive": _alive(st.worker),
        "status": "up" if w_ok else ("degraded" if _alive(st.worker) else "down"),
        "detail": (
            f"heartbeat {age:.1f} s ago, drained {stats.get('drained', 0)}, "
            f"demoted {stats.get('demoted', 0)}"
        )
        if age is not None
        else "no heartbeat yet",
    }
    for i, ns in enumerate(st.hot.nodes):
        comps[f"redis-{i}"] = _redis_node(ns.port, ns.process, cluster)
    for level, srv in st.caches.items():
        row = _redis_node(srv.port, srv.process, False)
        row["detail"] = f"cache {level}, maxmemory {srv.maxmemory_bytes >> 20} MiB"
        comps[f"cache-{level}"] = row
    if st.vector is not None:
        if st.vector.port is None:
            comps["milvus"] = {
                "pid": None,
                "ports": [],
                "alive": True,
                "status": "external",
                "detail": st.vector.uri,
            }
        else:
            up = _alive(st.vector.process) and port_is_listening("127.0.0.1", st.vector.port)
            comps["milvus"] = {
                "pid": _pid(st.vector.process),
                "ports": [st.vector.port],
                "alive": _alive(st.vector.process),
                "status": "up" if up else "down",
                "detail": st.vector.uri,
            }
    comps["cold"] = {
        "pid": None,
        "ports": [],
        "alive": True,
        "status": "up",
        "detail": st.cold_root,
    }
    lag = {}
    for k, v in stats.items():
        if k.startswith("lag_entries:"):
            t = k.split(":", 1)[1]
            lag[t] = {
                "entries": int(v),
                "age_s": float(stats.get(f"lag_s:{t}", 0) or 0),
                "shipped": int(stats.get(f"shipped:{t}", 0) or 0),
            }
    states = [c["status"] for c in comps.values()]
    if comps["api"]["status"] == "down" or all(
        comps[k]["status"] == "down" for k in comps if k.startswith("redis-")
    ):
        status = "down"
    elif all(s in ("up", "external") for s in states):
        status = "up"
    else:
        status = "degraded"
    return {
        "status": status,
        "api_url": comps["api"]["url"],
        "components": comps,
        "replication_lag": lag,
    }


def deployment_status(sd: StateDir) -> dict[str, Any]:
    """The status of the deployment in ``sd``.

    Raises:
        ConfigError: no deployment there.
    """
    state = sd.read_state()
    cluster = all(st.hot.type == "redis_cluster" for st in state.regions.values())
    regions = {name: _region(st, cluster) for name, st in state.regions.items()}
    proxy: dict[str, Any] = {}
    if state.proxy is not None:
        rec = state.proxy.process
        links: list[dict[str, Any]] = []
        if _alive(rec):
            from geoshard.cluster.proxy import ProxyControl
            from geoshard.errors import GeoshardError

            with contextlib.suppress(GeoshardError):
                links = ProxyControl(state.proxy.control_port, sd.read_token(), 2.0).links()
        proxy = {
            "pid": _pid(rec),
            "alive": _alive(rec),
            "control_port": state.proxy.control_port,
            "status": "up" if _alive(rec) else "down",
            "links": [
                {
                    k: lk.get(k)
                    for k in ("src", "dst", "port", "rtt_ms", "mode", "delay_ms", "connections")
                }
                for lk in links
            ],
        }
    overall = (
        "up"
        if all(r["status"] == "up" for r in regions.values()) and proxy.get("status") == "up"
        else "degraded"
    )
    return {
        "dir": str(sd.root),
        "name": state.name,
        "status": overall,
        "deployment_status": state.status,
        "catalog": state.catalog_url,
        "regions": regions,
        "proxy": proxy,
    }
