"""The deployment's health checks, turned into the router's :class:`~geoshard.cluster.routing.Health`.

Each API process runs one :class:`HealthMonitor` thread. Every ``interval_s`` it checks
its own region (its hot tier answers) and asks every other region's ``/healthz``
through the fault proxy. What it learns becomes the ``Health`` that every request's
:meth:`Router.plan <geoshard.cluster.routing.Router.plan>` receives:

* a region that answers that it is not healthy is **down** (``down_regions``);
* a region that does not answer (refused, reset, timeout) twice in a row is **cut off**
  from this one (a partition between the two): from here the two are the same thing,
  and the router skips it as an entry and as a replica;
* this region itself is down when its own hot tier does not answer, twice in a row.

The router never sees a network call: the monitor hands it a value (pure planning).

Examples:
    >>> mon = HealthMonitor("eu-west", ["eu-west", "us-east"], local_ok, peers)  # doctest: +SKIP
    >>> mon.check_once(); mon.health                                            # doctest: +SKIP
    Health(down_nodes=frozenset(), down_regions=frozenset(), partitions=frozenset())
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from geoshard.cluster.peers import PeerClient
from geoshard.cluster.routing import Health
from geoshard.errors import GeoshardError

__all__ = ["HealthMonitor", "RegionView"]


@dataclass(frozen=True)
class RegionView:
    """What this process believes about one region."""

    state: str  # "up", "down" or "unreachable"
    since_s: float
    detail: str = ""


class HealthMonitor:
    """Probes the regions and keeps the router's ``Health`` current.

    Args:
        region: this process's region.
        regions: every region of the deployment.
        local_ok: True when this region's own hot tier answers (called each round).
        peers: calls to the other regions through the proxy.
        interval_s: seconds between rounds.
        timeout_s: per-probe timeout.
        misses: consecutive failed probes before a region counts as unreachable.
    """

    def __init__(
        self,
        region: str,
        regions: Sequence[str],
        local_ok: Callable[[], bool],
        peers: PeerClient,
        *,
        interval_s: float = 0.5,
        timeout_s: float = 1.0,
        misses: int = 2,
    ) -> None:
        self.region = region
        self.regions = list(regions)
        self._local_ok = local_ok
        self._peers = peers
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.misses = misses
        now = time.time()
        self.views: dict[str, RegionView] = {r: RegionView("up", now) for r in self.regions}
        self.health = Health()
        self.local_ok = True
        self._local_fails = 0
        self._fails: dict[str, int] = dict.fromkeys(self.regions, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run one round now, then every ``interval_s`` in a daemon thread."""
        self.check_once()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check_once()

    def _probe(self, region: str) -> tuple[str, str]:
        try:
            status, body, _ = self._peers.call(
                region, "GET", "/healthz", timeout_s=self.timeout_s, accept_5xx=True
            )
        except GeoshardError as exc:
            return "unreachable", str(exc)
        try:
            ok = bool(json.loads(body).get("ok")) and status == 200
        except ValueError:
            ok = False
        return ("up", "") if ok else ("down", body[:200].decode(errors="replace"))

    def check_once(self) -> Health:
        """Probe every region once and update :attr:`health`."""
        now = time.time()
        down: set[str] = set()
        cut: set[frozenset[str]] = set()
        try:
            ok = bool(self._local_ok())
        except Exception:  # noqa: BLE001 - any failure of the local probe means "not ok"
            ok = False
        # as for the other regions, one failed probe (a stall, a failover in progress) is
        # not yet "down"
        self._local_fails = 0 if ok else self._local_fails + 1
        self.local_ok = ok or (self._local_fails < self.misses and self.local_ok)
        for r in self.regions:
            if r == self.region:
                state, detail = (
                    ("up", "") if self.local_ok else ("down", "hot tier does not answer")
                )
            else:
                state, detail = self._probe(r)
                if state == "unreachable":
                    self._fails[r] += 1
                    if self._fails[r] < self.misses and self.views[r].state == "up":
                        state = "up"  # one miss is not yet a partition
                else:
                    self._fails[r] = 0
            old = self.views[r]
            self.views[r] = RegionView(state, old.since_s if old.state == state else now, detail)
            if state == "down":
                down.add(r)
            elif state == "unreachable":
                cut.add(frozenset((self.region, r)))
        self.health = Health(frozenset(), frozenset(down), frozenset(cut))
        return self.health
