"""The in-flight count behind the API's admission control, its adaptive bound, and the
waits that do not count.

:class:`~geoshard.cluster.api.app.Admission` bounds the ``/v1`` requests a process works
on at once. A request that waits on another region (a forwarded request, a read of another
replica, a synchronous replication) holds no CPU here, so while it waits it gives its slot
back: :func:`waiting_on_peer` around the wait, in the handler's thread. Without this,
~100 ms cross-region calls at 17 requests/s per region kept 5 to 8 slots busy and a bound
sized for CPU work refused requests at light load.

The bound adapts (:class:`AdaptiveLimit`): a burst bound while the process is lightly
used, a smaller sustained bound while it is saturated. A fixed bound was either too small
for the bursts of light load (16 needed there: Locust's users arrive 5 to 8 at once per
region) or too large under overload, where every admitted request waits behind the others
(Little's law: at 3x capacity, 16 in flight gave admitted P99s of 97-130 ms, 8 gave
54-77 ms).

The request's :class:`Slots` travel to the handler's worker thread in a context variable
(anyio copies the context into the thread), so a wait outside any request (a health
probe) changes nothing.

Examples:
    >>> slots = Slots()
    >>> slots.take(limit=1)
    True
    >>> slots.take(limit=1)
    False
    >>> token = CURRENT.set(slots)
    >>> with waiting_on_peer():
    ...     slots.inflight
    0
    >>> slots.inflight
    1
    >>> CURRENT.reset(token)
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["CURRENT", "AdaptiveLimit", "Slots", "waiting_on_peer"]


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


#: The slots of the request being handled (unset outside a counted request).
CURRENT: ContextVar[Slots | None] = ContextVar("geoshard_admission_slots", default=None)


@contextmanager
def waiting_on_peer() -> Iterator[None]:
    """Give the current request's slot back while it waits on another region."""
    slots = CURRENT.get()
    if slots is None:
        yield
        return
    slots.give_back()
    try:
        yield
    finally:
        slots.retake()


class AdaptiveLimit:
    """The in-flight bound of one API process: a burst bound while the process is lightly
    used, a sustained bound while it is saturated.

    The time-averaged in-flight count (an exponential average with time constant
    ``tau_s``, updated at every admission and completion) tells the two apart: a burst
    of light load fills the process for a few milliseconds and the average stays low,
    while sustained overload keeps it at the bound. When the average reaches
    ``SATURATED`` (half) of ``sustained_limit``, the bound is ``sustained_limit``; below,
    it is ``max_limit``. By Little's law an admitted request waits behind about ``bound``
    others, so the sustained bound is what keeps admitted latency within its target under
    overload; measured here (``benchmarks/bench_overload.py``): 8 in flight kept the
    admitted P99s at 3x capacity within their SLOs where 16 did not, and 16 were needed
    for light load's bursts (Locust's users arrive 5 to 8 at once per region). Only the
    count is used, not latency: on a shared machine a request can be slow without any
    queue in this process, and refusing then helps nobody.

    Examples:
        >>> lim = AdaptiveLimit(max_limit=16, sustained_limit=8, tau_s=0.1)
        >>> lim.observe(inflight=12, now=0.0); lim.bound  # a burst: allowed
        16
        >>> for k in range(1, 40):  # 8 in flight for 0.4 s: saturated
        ...     lim.observe(inflight=8, now=k * 0.01)
        >>> lim.bound
        8
        >>> for k in range(40, 80):  # 1 in flight again: the burst bound is back
        ...     lim.observe(inflight=1, now=k * 0.01)
        >>> lim.bound
        16
    """

    SATURATED = 0.5

    def __init__(self, max_limit: int, sustained_limit: int, tau_s: float = 0.1) -> None:
        if not 1 <= sustained_limit <= max_limit:
            raise ValueError(
                f"need 1 <= sustained_limit ({sustained_limit}) <= max_limit ({max_limit})"
            )
        self.max_limit, self.sustained_limit = max_limit, sustained_limit
        self.tau_s = tau_s
        #: the time-averaged in-flight count
        self.average = 0.0
        self._inflight = 0
        self._t = 0.0

    @property
    def saturated(self) -> bool:
        """Is the process working at its sustained bound (the average says so)?"""
        return self.average >= self.SATURATED * self.sustained_limit

    @property
    def bound(self) -> int:
        """Requests admitted at once now."""
        return self.sustained_limit if self.saturated else self.max_limit

    def observe(self, inflight: int, now: float) -> None:
        """The in-flight count changed to ``inflight`` at ``now`` (seconds, monotonic)."""
        dt = max(0.0, now - self._t)
        w = math.exp(-dt / self.tau_s) if self.tau_s > 0 else 0.0
        # the count held its previous value over the last dt
        self.average = self.average * w + self._inflight * (1.0 - w)
        self._inflight, self._t = inflight, now
