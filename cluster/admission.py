"""The in-flight count behind the API's admission control, its adaptive bound, and the
waits that do not count.

:class:`~geoshard.cluster.api.app.Admission` bounds the ``/v1`` requests a process works
on at once. A request that waits on another region (a forwarded request, a read of another
replica, a synchronous replication) holds no CPU here, so while it waits it gives its slot
back: :func:`waiting_on_peer` around the wait, in the handler's thread. Without this,
~100 ms cross-region calls at 17 requests/s per region kept 5 to 8 slots busy and a bound
sized for CPU work refused requests at light load.

The bound adapts (:class:`AdaptiveLimit`, additive increase and multiplicative decrease
on latency, as TCP Vegas-style concurrency limiters do): a fixed bound is either too
small for the bursts of light load (16 needed there: Locust's users arrive 5 to 8 at
once per region) or too large under overload, where every admitted request waits behind
the others (Little's law: at 3x capacity, 16 in flight gave admitted P99s of 97-130 ms,
8 gave 54-77 ms).

Each admitted request holds a :class:`Lease`, which travels to the handler's worker thread
in a context variable (anyio copies the context into the thread), so a wait outside any
request (a health probe) changes nothing.

Examples:
    >>> slots = Slots()
    >>> slots.take(limit=1)
    True
    >>> slots.take(limit=1)
    False
    >>> lease = Lease(slots, 0.0)
    >>> token = CURRENT.set(lease)
    >>> with waiting_on_peer():
    ...     slots.inflight
    0
    >>> slots.inflight, lease.peer_s >= 0
    (1, True)
    >>> CURRENT.reset(token)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["CURRENT", "AdaptiveLimit", "Lease", "Slots", "request_type", "waiting_on_peer"]


class Slots:
    """A thread-safe count of the requests a process works on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inflight = 0

    def take(self, limit: int) -> bool:
        """Count one more request unless ``limit`` are already counted."""
        with self._lock:
            if self.inflight >= limit:
                return False
            self.inflight += 1
            return True

    def give_back(self) -> None:
        """Count one request fewer."""
        with self._lock:
            self.inflight -= 1

    def retake(self) -> None:
        """Count a waiting request again (never refused: it was admitted)."""
        with self._lock:
            self.inflight += 1


class Lease:
    """One admitted request: its process's slots, when it was admitted (``time.monotonic``)
    and how long it has waited on other regions (``peer_s``, which is not the process's
    work)."""

    __slots__ = ("peer_s", "slots", "t0")

    def __init__(self, slots: Slots, t0: float) -> None:
        self.slots = slots
        self.t0 = t0
        self.peer_s = 0.0


#: The lease of the request being handled (unset outside a counted request).
CURRENT: ContextVar[Lease | None] = ContextVar("geoshard_admission_lease", default=None)


@contextmanager
def waiting_on_peer() -> Iterator[None]:
    """Give the current request's slot back while it waits on another region."""
    lease = CURRENT.get()
    if lease is None:
        yield
        return
    lease.slots.give_back()
    t = time.monotonic()
    try:
        yield
    finally:
        lease.peer_s += time.monotonic() - t
        lease.slots.retake()


class AdaptiveLimit:
    """The in-flight bound of one API process, adapted to the time admitted requests take.

    After each admitted request, its time in the process (admission to last byte, less
    its waits on other regions) is divided by its target (``latency_share`` x the P50
    target of its request type) and smoothed (EWMA, weight ``1/8``). When the smoothed
    ratio is above 1, requests are queueing behind each other: the bound is cut by 10 %,
    at most once per ``cooldown_s`` (a cut takes effect as the requests in flight
    finish). When it is below 1/2 and at least half the bound was in use, the bound grows
    by ``1 / bound`` (one request per bound's worth of completions, as TCP's congestion
    avoidance). It stays in ``[min_limit, max_limit]``, starting at ``max_limit``, so light
    load keeps the whole bound for its bursts.

    Examples:
        >>> lim = AdaptiveLimit(max_limit=16, min_limit=4)
        >>> for k in range(40):  # each request takes 3x its target: a queue
        ...     lim.on_done(held_s=0.03, target_s=0.01, inflight=16, now=k * 0.1)
        >>> lim.bound
        4
        >>> for k in range(200):  # fast again, and the bound is in use: it grows back
        ...     lim.on_done(held_s=0.001, target_s=0.01, inflight=lim.bound, now=10 + k * 0.1)
        >>> lim.bound
        16
    """

    ALPHA = 0.125
    BACKOFF = 0.9

    def __init__(self, max_limit: int, min_limit: int, cooldown_s: float = 0.05) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError(f"need 1 <= min_limit ({min_limit}) <= max_limit ({max_limit})")
        self.max_limit, self.min_limit = max_limit, min_limit
        self.cooldown_s = cooldown_s
        self.limit = float(max_limit)
        #: smoothed time in the process / target of the recent admitted requests
        self.signal = 0.0
        self._last_cut = -math.inf

    @property
    def bound(self) -> int:
        """Requests admitted at once now."""
        return max(self.min_limit, int(self.limit))

    def on_done(self, held_s: float, target_s: float, inflight: int, now: float) -> None:
        """Account one admitted request that took ``held_s`` against ``target_s`` with
        ``inflight`` requests in the process when it finished."""
        self.signal += self.ALPHA * (held_s / target_s - self.signal)
        if self.signal > 1.0:
            if now - self._last_cut >= self.cooldown_s:
                self.limit = max(float(self.min_limit), self.limit * self.BACKOFF)
                self._last_cut = now
        elif self.signal < 0.5 and inflight + 1 >= self.limit / 2:
            self.limit = min(float(self.max_limit), self.limit + 1.0 / self.limit)


def request_type(method: str, path: str) -> str:
    """The SLO request type a ``/v1`` route is judged as: recommends, writes (interactions
    and feature updates), and reads (features, items, a user's interactions).

    Examples:
        >>> request_type("GET", "/v1/recommend/u1"), request_type("PUT", "/v1/users/u1/features")
        ('recommend', 'interaction_write')
        >>> request_type("GET", "/v1/items/i9")
        'feature_read'
    """
    if path.startswith("/v1/recommend/"):
        return "recommend"
    if method in ("POST", "PUT"):
        return "interaction_write"
    return "feature_read"
