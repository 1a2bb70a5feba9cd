"""The in-flight count behind the API's admission control, and the waits that do not
count.

:class:`~geoshard.cluster.api.app.Admission` bounds the ``/v1`` requests a process works
on at once. A request that waits on another region (a forwarded request, a read of
another replica, a synchronous replication) holds no CPU here, so while it waits it
gives its slot back: :func:`waiting_on_peer` around the wait, in the handler's thread.
Without this, ~100 ms cross-region calls at 17 requests/s per region kept 5 to 8 slots
busy and a bound sized for CPU work refused requests at light load.

The request's :class:`Slots` travel to the handler's worker thread in a context
variable (anyio copies the context into the thread), so a wait outside any request (a
health probe) changes nothing.

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

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["CURRENT", "Slots", "waiting_on_peer"]


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
