"""Reading a deployment's tiers back after a chaos run: durability and residency.

:func:`read_back` finds, for every write of the ledger, the token each region holds:
feature writes in the hot tier (read from the Redis Cluster directly, never through an
API, whose L1 cache could hide a loss), interactions in the region's write log (the
Redis Stream) or its Parquet files.

:func:`residency_audit` walks everything a region keeps and checks every personal
datum against the residency policy (``store``): every key of every hot-tier node
(primaries and replicas), every member of the region's access set (``{gs:r}:access``,
key texts with user ids), every cache server, every write-log entry, every user
embedding of the region's Milvus collection and every Parquet file under the region's
cold root. The deployment's SQL catalog holds no user id (topology, drains), so it is
not walked. Zero tolerance: one datum outside its allowed regions is a violation.

Both are bounded: at most ``max_keys`` keys per node and ``max_entries`` log entries
per region (a larger deployment is reported as not fully audited, never silently).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from geoshard.cluster.chaos.ledger import Write
from geoshard.cluster.envelope import unwrap
from geoshard.cluster.launcher import redis_client
from geoshard.cluster.regionlog import RegionLog
from geoshard.cluster.state import DeploymentState
from geoshard.cluster.stores import open_region
from geoshard.errors import GeoshardError
from geoshard.keys import PERSONAL_CLASSES, DataKey, UserKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import Spec
from geoshard.storage.keylayout import parse_key_text

__all__ = ["AuditReport", "ReadBack", "parse_stored_key", "read_back", "residency_audit"]

MAX_KEYS_PER_NODE = 2_000_000
MAX_LOG_ENTRIES = 2_000_000


def parse_stored_key(name: str) -> DataKey | None:
    """The personal :class:`DataKey` a hot-tier or cache key name holds, else None.

    ``[<namespace>:]{<shard>}:<data_class>:<owner>``; control keys (``{gs:...}``), item
    keys and names of another layout give None.

    Examples:
        >>> str(parse_stored_key("l2:{eu:4}:user_features:eu:4"))
        'user_features:eu:4'
        >>> parse_stored_key("{gs:eu-west}:log") is None
        True
    """
    close = name.find("}:")
    if close < 0 or "{" not in name[:close]:
        return None
    rest = name[close + 2 :]
    data_class = rest.partition(":")[0]
    if data_class not in PERSONAL_CLASSES:
        return None
    try:
        return parse_key_text(rest)
    except GeoshardError:
        return None


@dataclass
class AuditReport:
    """What :func:`residency_audit` checked and found.

    Attributes:
        checked: personal data checked, per place (``hot``, ``access``, ``cache``,
            ``stream``, ``milvus``, ``parquet``).
        violations: one line per personal datum outside its allowed regions (the first
            100; ``violation_count`` has them all).
        violation_count: how many violations in total.
        complete: False when a bound cut a walk short or a store did not answer.
        problems: why the audit is not complete.
    """

    checked: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    violation_count: int = 0
    complete: bool = True
    problems: list[str] = field(default_factory=list)

    def add(self, where: str, region: str, key: DataKey, policy: ResidencyPolicy, at: str) -> None:
        """Check one datum found in ``region`` (at ``at``, for the message)."""
        self.checked[where] = self.checked.get(where, 0) + 1
        owner = key.owner
        if not isinstance(owner, UserKey):
            return
        if policy.is_allowed(owner.jurisdiction, key.data_class, region, "store"):
            return
        self.violation_count += 1
        if len(self.violations) < 100:
            allowed = sorted(policy.allowed_regions(owner.jurisdiction, key.data_class, "store"))
            self.violations.append(
                f"{where} {at} in {region}: {key} (allowed: {', '.join(allowed)})"
            )


def _scan_keys(port: int, max_keys: int) -> Iterator[str]:
    client = redis_client(port, timeout_s=5.0)
    try:
        for n, raw in enumerate(client.scan_iter(count=1000), start=1):
            yield raw.decode() if isinstance(raw, bytes) else str(raw)
            if n >= max_keys:
                raise OverflowError(f"127.0.0.1:{port} holds more than {max_keys} keys")
    finally:
        client.close()


def _zset_members(port: int, name: str, max_members: int) -> Iterator[str]:
    """The members of sorted set ``name`` on the cluster node at ``port``, a replica too
    (``READONLY`` on the one connection, else a replica answers MOVED)."""
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=5.0,
        socket_connect_timeout=5.0,
        single_connection_client=True,
    )
    try:
        client.execute_command("READONLY")
        for n, (raw, _score) in enumerate(client.zscan_iter(name, count=1000), start=1):
            yield raw.decode() if isinstance(raw, bytes) else str(raw)
            if n >= max_members:
                raise OverflowError(f"{name} on 127.0.0.1:{port} has over {max_members} members")
    finally:
        client.close()


def _log_entries(spec: Spec, state: DeploymentState, region: str) -> Iterator[dict[bytes, bytes]]:
    stores = open_region(spec, state, region, caches=False)
    try:
        log = RegionLog(stores.hot, region, wait_replicas=0)
        cursor, n = "0", 0
        while True:
            rows = log.read(cursor, count=5000)
            for sid, fields in rows:
                yield fields
                cursor = sid
                n += 1
            if len(rows) < 5000:
                return
            if n >= MAX_LOG_ENTRIES:
                raise OverflowError(f"{region}'s write log holds more than {MAX_LOG_ENTRIES}")
    finally:
        stores.close()


def _parquet_files(root: str) -> Iterator[tuple[Path, str, str]]:
    """``(file, region, data_class)`` of every Parquet data file under ``root``."""
    if "://" in root:
        return
    for dirpath, _dirs, files in os.walk(root):
        parts = dict(p.split("=", 1) for p in Path(dirpath).parts if "=" in p)
        for f in files:
            if f.endswith(".parquet") and not f.startswith((".", "_")):
                yield Path(dirpath) / f, parts.get("region", ""), parts.get("data_class", "")


def residency_audit(spec: Spec, state: DeploymentState) -> AuditReport:
    """Check every personal datum every region keeps; see the module docstring."""
    import pyarrow.parquet as pq

    policy = ResidencyPolicy.from_spec(spec)
    rep = AuditReport()
    for region, st in state.regions.items():
        nodes = [("hot", ns.port) for ns in st.hot.nodes] + [
            ("cache", srv.port) for srv in st.caches.values()
        ]
        for where, port in nodes:
            try:
                for name in _scan_keys(port, MAX_KEYS_PER_NODE):
                    key = parse_stored_key(name)
                    if key is not None:
                        rep.add(where, region, key, policy, f"127.0.0.1:{port}")
                    elif name.startswith("{gs:") and name.endswith("}:access"):
                        # the access times that drive demotion: members are key texts,
                        # user ids included
                        for member in _zset_members(port, name, MAX_KEYS_PER_NODE):
                            try:
                                key = parse_key_text(member)
                            except GeoshardError:
                                continue
                            rep.add("access", region, key, policy, f"127.0.0.1:{port} {name}")
            except Exception as exc:  # noqa: BLE001 - reported: the audit is incomplete
                rep.complete = False
                rep.problems.append(f"{where} 127.0.0.1:{port} of {region}: {exc}")
        try:
            for fields in _log_entries(spec, state, region):
                text = fields.get(b"key", b"").decode(errors="replace")
                try:
                    key = parse_key_text(text)
                except GeoshardError:
                    continue
                rep.add("stream", region, key, policy, "write log")
        except Exception as exc:  # noqa: BLE001 - reported
            rep.complete = False
            rep.problems.append(f"write log of {region}: {exc}")
        try:
            stores = open_region(spec, state, region, vector=True, caches=False)
            try:
                assert stores.vector is not None
                rep.checked.setdefault("milvus", 0)  # shown even when it holds no personal row
                for owner, _vec, _attrs in stores.vector.scan("user_embeddings"):
                    rep.add(
                        "milvus",
                        region,
                        DataKey("user_embeddings", UserKey.parse(owner)),
                        policy,
                        "collection",
                    )
            finally:
                stores.close()
        except Exception as exc:  # noqa: BLE001 - reported
            rep.complete = False
            rep.problems.append(f"Milvus of {region}: {exc}")
        for path, part_region, data_class in _parquet_files(st.cold_root):
            try:
                owners = pq.read_table(path, columns=["owner"]).column("owner").to_pylist()
            except Exception as exc:  # noqa: BLE001 - reported
                rep.complete = False
                rep.problems.append(f"Parquet {path}: {exc}")
                continue
            if part_region and part_region != region:
                rep.violation_count += 1
                rep.violations.append(f"parquet {path}: partition region={part_region} in {region}")
            if data_class not in PERSONAL_CLASSES:
                continue
            for owner in set(owners):
                rep.add(
                    "parquet", region, DataKey(data_class, UserKey.parse(owner)), policy, path.name
                )
    return rep


@dataclass
class ReadBack:
    """What :func:`read_back` found: per key, the token each region holds."""

    tokens: dict[str, dict[str, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: ledger interactions found more than once in one region's Parquet files (a batch
    #: drained again after a crash before its cursor moved; readers dedupe by event id)
    parquet_duplicates: int = 0

    def found_for(self, writes: Sequence[Write]) -> dict[str, set[str]]:
        """The ``found`` argument of :func:`~geoshard.cluster.chaos.ledger.check_set`: an
        acknowledged write must be in the region that acknowledged it; any other write is
        looked for in every region."""
        out: dict[str, set[str]] = {}
        for w in writes:
            per_region = self.tokens.get(w.key, {})
            if w.outcome == "ok":
                tok = per_region.get(w.region)
                vals = {tok} if tok is not None else set()
            else:
                vals = set(per_region.values())
            out.setdefault(w.key, set()).update(vals)
        return out

    def not_replicated(self, writes: Sequence[Write], replicas: dict[str, list[str]]) -> int:
        """Acknowledged writes missing from one of their key's replica regions."""
        n = 0
        for w in writes:
            if w.outcome == "ok":
                held = self.tokens.get(w.key, {})
                n += any(held.get(r) != w.token for r in replicas.get(w.key, []))
        return n


def read_back(spec: Spec, state: DeploymentState, writes: Sequence[Write], run_id: str) -> ReadBack:
    """The token every region holds for every key the ledger wrote (see the module)."""
    import pyarrow.parquet as pq

    policy = ResidencyPolicy.from_spec(spec)
    out = ReadBack()
    features = sorted({w.key for w in writes if w.kind == "feature"})
    interactions = {w.token: w.key for w in writes if w.kind == "interaction"}
    for region in state.regions:
        keys = [
            k
            for k in (parse_key_text(t) for t in features)
            if isinstance(k.owner, UserKey)
            and policy.is_allowed(k.owner.jurisdiction, k.data_class, region, "store")
        ]
        if keys:
            stores = open_region(spec, state, region, caches=False)
            try:
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    for k, raw in zip(chunk, stores.hot.get_many(chunk), strict=True):
                        if raw is None:
                            continue
                        tok = _feature_token(raw)
                        if tok is not None:
                            out.tokens.setdefault(str(k), {})[region] = tok
            except GeoshardError as exc:
                out.problems.append(f"hot tier of {region}: {exc}")
            finally:
                stores.close()
        if not interactions:
            continue
        try:
            for fields in _log_entries(spec, state, region):
                if fields.get(b"kind") == b"interaction":
                    _found_event(out, fields.get(b"value", b""), region, interactions)
        except GeoshardError as exc:
            out.problems.append(f"write log of {region}: {exc}")
        st = state.regions[region]
        in_parquet: set[str] = set()
        for path, _r, data_class in _parquet_files(st.cold_root):
            if data_class != "interactions":
                continue
            for value in pq.read_table(path, columns=["value"]).column("value").to_pylist():
                if value and run_id.encode() in value:
                    tok = _found_event(out, value, region, interactions)
                    if tok is not None and tok in in_parquet:
                        out.parquet_duplicates += 1
                    elif tok is not None:
                        in_parquet.add(tok)
    return out


def _feature_token(raw: bytes) -> str | None:
    try:
        doc: Any = json.loads(unwrap(raw)[1])
        tok = doc.get("features", {}).get("chaos")
    except (ValueError, AttributeError):
        return None
    return tok if isinstance(tok, str) else None


def _found_event(
    out: ReadBack, value: bytes, region: str, interactions: dict[str, str]
) -> str | None:
    """Record the event ``value`` holds; its event id (None when it is not an event)."""
    try:
        ev = json.loads(value)
        tok = str(ev["event_id"])
    except (ValueError, KeyError, TypeError):
        return None
    key = interactions.get(tok)
    if key is None:
        key = f"interactions:{ev.get('user_id', '?')}"
    out.tokens.setdefault(key, {})[region] = tok
    return tok
