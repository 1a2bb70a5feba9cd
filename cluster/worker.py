"""The region worker: one background process per region of a deployment.

It runs ``python -m geoshard.cluster.worker`` with ``GEOSHARD_DIR`` and
``GEOSHARD_REGION`` set (``geoshard up`` starts it) and keeps, each in its own thread:

* **drain**: reads the region's write log after the ``drain`` cursor and appends its
  interactions to the cold tier (Parquet, one event id once per batch), records each
  batch in the catalog (:meth:`Catalog.record_drain
  <geoshard.storage.base.Catalog.record_drain>`), refreshes each user's recently-seen
  items (``sessions``) and the region's trending items, then advances the cursor and
  trims what every consumer has passed;
* **ship**, one per other region: sends the log entries that region must hold to its
  ``/internal/v1/replicate`` through the fault proxy, advancing ``ship:<region>`` only
  when they were applied; while the region is unreachable the entries wait (the
  replication lag grows, in ``geoshard status`` and ``/metrics``) and are replayed when
  it returns;
* **sweep**: demotes keys idle for ``deploy.tiering.max_idle_s`` from hot to cold with
  :class:`~geoshard.storage.tiering.TierManager` (cold copy written and verified before
  the hot one is deleted); a later read promotes them again;
* **items**: exports the item-shard snapshot from Milvus when ``geoshard seed`` changed
  the items (:func:`~geoshard.cluster.itemindex.export_snapshot`);
* **stats**: publishes its counters and lags to the region's stats hash every second.

Examples:
    >>> worker = RegionWorker(spec, state, "eu-west", token)   # doctest: +SKIP
    >>> worker.drain_once()                                     # doctest: +SKIP
    12
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geoshard.cluster import metrics as m
from geoshard.cluster.envelope import new_version, unwrap, wrap
from geoshard.cluster.itemindex import current_version, export_snapshot
from geoshard.cluster.peers import PeerClient
from geoshard.cluster.regionlog import RegionLog
from geoshard.cluster.routing import Router
from geoshard.cluster.state import DeploymentState, StateDir
from geoshard.cluster.stores import open_region
from geoshard.errors import GeoshardError
from geoshard.keys import DataKey, UserKey
from geoshard.spec import Spec, load_spec
from geoshard.storage.caches import ReadThroughCache, build_cache_levels
from geoshard.storage.keylayout import parse_key_text
from geoshard.storage.tiering import TieringPolicy, TierManager

__all__ = ["ITEMS_VERSION_FIELD", "RegionWorker", "main"]

#: The stats field ``geoshard seed`` bumps when it changed the items.
ITEMS_VERSION_FIELD = "items_version"
#: How many recently seen items a user's ``sessions`` value keeps.
SEEN_LIMIT = 200
#: Weight of each interaction type in the trending counts.
_WEIGHT = {"purchase": 5.0, "click": 2.0, "view": 1.0}
_TRENDING_SIZE = 500


def _ms_of(stream_id: str) -> float:
    return float(stream_id.split("-", 1)[0])


class RegionWorker:
    """The background work of one region (each loop also callable once, for tests).

    Args:
        spec: the deployment's spec.
        state: the recorded deployment.
        region: the region.
        token: the deployment's bearer token.
        log: where diagnostics go (stderr by default).
    """

    def __init__(
        self,
        spec: Spec,
        state: DeploymentState,
        region: str,
        token: str,
        *,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.region = region
        self.router = Router.from_spec(spec)
        self.residency = self.router.residency
        self.stores = open_region(
            spec, state, region, residency=self.residency, vector=True, catalog=True
        )
        h = spec.storage.hot
        self.rlog = RegionLog(
            self.stores.hot,
            region,
            wait_replicas=h.wait_replicas if h.durable_writes else 0,
            wait_timeout_ms=h.wait_timeout_ms,
        )
        levels = build_cache_levels(
            spec.caches, region=region, residency=self.residency, stores=self.stores.caches
        )
        self.reader = ReadThroughCache(
            levels, loader=self.stores.hot.get, writer=self.stores.hot.put
        )
        t = spec.deploy.tiering
        self.tiers = TierManager(
            self.stores.hot,
            self.stores.cold,
            policy=TieringPolicy(
                max_idle_s=t.max_idle_s, hot_ttl_s=t.hot_ttl_s, batch_size=t.batch_size
            ),
        )
        assert state.proxy is not None
        self.targets = sorted({lk.dst for lk in state.proxy.links if lk.src == region})
        self.peers = PeerClient(
            region, {lk.dst: lk.port for lk in state.proxy.links if lk.src == region}, token
        )
        self.items_root = Path(state.regions[region].dir) / "items"
        self._say = log or (
            lambda msg: print(
                f"{time.strftime('%H:%M:%S')} {region} worker: {msg}", file=sys.stderr, flush=True
            )
        )
        self._stop = threading.Event()
        self._last_error: dict[str, float] = {}
        self.counters: Counter[str] = Counter()
        self.lag: dict[str, tuple[int, float]] = dict.fromkeys(self.targets, (0, 0.0))
        self.trend: dict[str, float] = {}
        self._trend_dirty = False
        self.items_exported: str | None = current_version(self.items_root)

    # ------------------------------------------------------------------ drain
    def drain_once(self, batch: int = 2000) -> int:
        """Drain one batch of the log into the cold tier; how many records were appended."""
        cursor = self.rlog.cursor("drain")
        rows = self.rlog.read(cursor, count=batch)
        if not rows:
            return 0
        by_date: dict[str, list[tuple[DataKey, bytes]]] = {}
        seen_ids: set[str] = set()
        per_user: dict[UserKey, list[str]] = {}
        for _, fields in rows:
            if fields.get(b"kind") != b"interaction":
                continue
            value = fields[b"value"]
            ev = json.loads(value)
            if ev["event_id"] in seen_ids:
                continue
            seen_ids.add(ev["event_id"])
            user = UserKey.parse(ev["user_id"])
            day = dt.datetime.fromtimestamp(float(ev["ts"]), tz=dt.UTC).date().isoformat()
            by_date.setdefault(day, []).append((DataKey("interactions", user), value))
            per_user.setdefault(user, []).append(ev["item_id"])
            self.trend[ev["item_id"]] = self.trend.get(ev["item_id"], 0.0) + _WEIGHT.get(
                ev["type"], 1.0
            )
        appended = 0
        for day, records in sorted(by_date.items()):
            appended += self.stores.cold.append(records, date=day)
        if appended:
            m.TIER_OPS.labels(self.region, "cold", "append").inc(appended)
            self._trend_dirty = True
        for user, items in per_user.items():
            self._remember_seen(user, items)
        assert self.stores.catalog is not None
        self.stores.catalog.record_drain(
            region=self.region,
            stream=self.rlog.log_key,
            first_id=rows[0][0],
            last_id=rows[-1][0],
            records=appended,
            at_s=time.time(),
        )
        self.rlog.set_cursor("drain", rows[-1][0])
        self.counters["drained"] += appended
        self._trim()
        return appended

    def _remember_seen(self, user: UserKey, items: list[str]) -> None:
        key = DataKey("sessions", user)
        cur = self.stores.hot.get(key)
        seen: list[str] = json.loads(unwrap(cur)[1]).get("seen", []) if cur is not None else []
        for i in items:
            if i in seen:
                seen.remove(i)
            seen.append(i)
        doc = json.dumps({"seen": seen[-SEEN_LIMIT:]}, separators=(",", ":")).encode()
        self.reader.write_through(key, wrap(new_version(), doc))

    def _trim(self) -> None:
        names = ["drain", *[f"ship:{t}" for t in self.targets]]
        cursors = self.rlog.cursors(names)
        if all(c != "0" for c in cursors.values()):
            self.rlog.trim(min(cursors.values(), key=lambda c: tuple(int(x) for x in c.split("-"))))

    def refresh_trending(self) -> bool:
        """Rewrite the region's trending list from recent interactions (when there were
        any since the last rewrite) on top of the items' popularity; True if rewritten."""
        if not self._trend_dirty:
            return False
        key = DataKey("aggregates", f"trending-{self.region}")
        cur = self.stores.hot.get(key)
        base: list[str] = json.loads(unwrap(cur)[1]).get("items", []) if cur is not None else []
        score: dict[str, float] = {}
        for rank, item in enumerate(base):
            score[item] = score.get(item, 0.0) + 1.0 / (1 + rank)
        for item, n in self.trend.items():
            score[item] = score.get(item, 0.0) + n
        items = sorted(score, key=lambda i: -score[i])[:_TRENDING_SIZE]
        doc = json.dumps(
            {"items": items, "updated_at": time.time()}, separators=(",", ":")
        ).encode()
        self.reader.write_through(key, wrap(new_version(), doc))
        # decay: recent interactions weigh more; forget the faint ones
        self.trend = {i: n * 0.5 for i, n in self.trend.items() if n >= 0.05}
        self._trend_dirty = False
        return True

    # ------------------------------------------------------------------ ship
    @staticmethod
    def _targets_of(fields: dict[bytes, bytes]) -> set[str]:
        raw = fields.get(b"targets", b"").decode()
        return {t for t in raw.split(",") if t}

    def ship_once(self, target: str, batch: int = 500) -> int:
        """Ship the next batch of log entries ``target`` must hold; how many were applied.

        Raises:
            GeoshardError: ``target`` is unreachable or refused (the cursor stays).
        """
        name = f"ship:{target}"
        cursor = self.rlog.cursor(name)
        rows = self.rlog.read(cursor, count=batch)
        if not rows:
            self._set_lag(target, 0, 0.0)
            return 0
        mine = [(sid, f) for sid, f in rows if target in self._targets_of(f)]
        if mine:
            entries = [
                {
                    "kind": f[b"kind"].decode(),
                    "key": f[b"key"].decode(),
                    "value": base64.b64encode(f[b"value"]).decode(),
                }
                for _, f in mine
            ]
            try:
                status, data = self.peers.call_json(
                    target, "POST", "/internal/v1/replicate", {"entries": entries}, timeout_s=10.0
                )
            except GeoshardError:
                self._measure_lag(target, cursor)
                raise
            if status == 403:
                # never retried along a path that leaves the jurisdiction: report, skip
                self._say(f"{target} refused {len(entries)} entries by residency: {data}")
                self.counters[f"refused:{target}"] += len(entries)
            elif status != 200:
                self._measure_lag(target, cursor)
                raise GeoshardError(f"{target} answered {status}: {data}")
        self.rlog.set_cursor(name, rows[-1][0])
        self.counters[f"shipped:{target}"] += len(mine)
        self._measure_lag(target, rows[-1][0])
        return len(mine)

    def _measure_lag(self, target: str, cursor: str) -> None:
        rows = self.rlog.read(cursor, count=10_000)
        mine = [sid for sid, f in rows if target in self._targets_of(f)]
        age = (time.time() * 1000 - _ms_of(mine[0])) / 1000 if mine else 0.0
        self._set_lag(target, len(mine), max(0.0, age))

    def _set_lag(self, target: str, entries: int, age_s: float) -> None:
        self.lag[target] = (entries, age_s)
        m.REPLICATION_LAG_ENTRIES.labels(self.region, target).set(entries)
        m.REPLICATION_LAG_S.labels(self.region, target).set(age_s)

    # ------------------------------------------------------------------ sweep
    def sweep_once(self, now_s: float | None = None) -> int:
        """Demote the keys idle for ``max_idle_s`` (hot -> cold); how many were demoted."""
        now = time.time() if now_s is None else now_s
        t = self.spec.deploy.tiering
        idle = self.rlog.idle(now - t.max_idle_s, limit=t.batch_size)
        if not idle:
            return 0
        keys: list[DataKey] = []
        for text in idle:
            key = parse_key_text(text)
            if key.jurisdiction is None or self.residency.is_allowed(
                key.jurisdiction, key.data_class, self.region, "store"
            ):
                keys.append(key)
        res = self.tiers.demote(keys, now_s=now)
        self.rlog.forget(idle)
        self.counters["demoted"] += res.demoted
        if res.demoted:
            m.TIER_OPS.labels(self.region, "hot", "demote").inc(res.demoted)
        return res.demoted

    # ------------------------------------------------------------------ items
    def export_items_once(self) -> bool:
        """Export the item snapshot when seed changed the items; True if exported."""
        version = self.rlog.stats().get(ITEMS_VERSION_FIELD)
        if not version or version == self.items_exported:
            return False
        assert self.stores.vector is not None
        n = export_snapshot(
            self.stores.vector, self.router.items, self.region, self.items_root, version
        )
        self.items_exported = version
        self._say(f"exported {n} items (version {version})")
        return True

    # ------------------------------------------------------------------ stats
    def publish_stats(self) -> None:
        """Write the worker's counters, lags and heartbeat to the region's stats hash."""
        fields: dict[str, str | int | float] = {
            "heartbeat": round(time.time(), 3),
            "pid": os.getpid(),
            "drained": self.counters["drained"],
            "demoted": self.counters["demoted"],
            "items_exported": self.items_exported or "",
        }
        for t, (n, age) in self.lag.items():
            fields[f"lag_entries:{t}"] = n
            fields[f"lag_s:{t}"] = round(age, 3)
            fields[f"shipped:{t}"] = self.counters[f"shipped:{t}"]
        self.rlog.put_stats(fields)

    # ------------------------------------------------------------------ loops
    def _loop(self, name: str, interval_s: float, fn: Callable[[], Any]) -> None:
        backoff = interval_s
        while not self._stop.is_set():
            try:
                busy = fn()
                backoff = interval_s
            except GeoshardError as exc:
                busy = False
                now = time.monotonic()
                if now - self._last_error.get(name, 0.0) > 10.0:
                    self._say(f"{name}: {exc}")
                    self._last_error[name] = now
                backoff = min(5.0, backoff * 2)
            if not busy:
                self._stop.wait(backoff)

    def run(self) -> None:
        """Run every loop until :meth:`stop`."""
        d = self.spec.deploy

        def idle(fn: Callable[[], Any]) -> Callable[[], bool]:
            def once() -> bool:
                fn()
                return False  # run again after the interval, not at once

            return once

        loops: list[tuple[str, float, Callable[[], Any]]] = [
            ("drain", d.ingest.drain_interval_s, self.drain_once),
            ("trending", 5.0, idle(self.refresh_trending)),
            ("sweep", d.tiering.sweep_interval_s, idle(self.sweep_once)),
            ("items", 1.0, idle(self.export_items_once)),
            ("stats", 1.0, idle(self.publish_stats)),
        ]
        loops += [(f"ship:{t}", 0.2, lambda t=t: self.ship_once(t)) for t in self.targets]  # type: ignore[misc]
        threads = [
            threading.Thread(target=self._loop, args=loop, name=loop[0], daemon=True)
            for loop in loops
        ]
        for th in threads:
            th.start()
        self._say(f"running: drain, ship to {', '.join(self.targets) or 'no region'}, sweep, items")
        self._stop.wait()
        for th in threads:
            th.join(timeout=10)

    def stop(self) -> None:
        """Ask the loops to stop."""
        self._stop.set()

    def close(self) -> None:
        """Close the stores and connections."""
        self.peers.close()
        self.stores.close()


def main() -> int:
    """Entry point: ``python -m geoshard.cluster.worker`` (``GEOSHARD_DIR``, ``GEOSHARD_REGION``)."""
    root, region = os.environ.get("GEOSHARD_DIR"), os.environ.get("GEOSHARD_REGION")
    if not root or not region:
        print("error: set GEOSHARD_DIR and GEOSHARD_REGION (geoshard up does)", file=sys.stderr)
        return 2
    sd = StateDir(Path(root))
    try:
        worker = RegionWorker(load_spec(sd.spec_file), sd.read_state(), region, sd.read_token())
    except GeoshardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    try:
        worker.run()
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
