"""Last-access times of hot keys, batched per process, for background demotion.

Every read or write of a key in a region marks it used; the region worker demotes keys
unused for ``deploy.tiering.max_idle_s`` (:mod:`geoshard.cluster.worker`). Recording
each access in Redis would add a round trip to every read, so :class:`AccessTracker`
keeps the newest time per key in memory and flushes the batch to the region's access
set (:meth:`RegionLog.touch <geoshard.cluster.regionlog.RegionLog.touch>`, ``ZADD GT``)
every ``flush_s`` from a daemon thread. A crash loses at most ``flush_s`` of access
times: the keys then look a little older, which only makes demotion earlier.

Examples:
    >>> tracker = AccessTracker(region_log, flush_s=1.0)   # doctest: +SKIP
    >>> tracker.touch("user_features:eu:1")                # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from geoshard.cluster.regionlog import RegionLog
from geoshard.errors import GeoshardError

__all__ = ["AccessTracker"]


class AccessTracker:
    """Collects key accesses and flushes them to the region's access set.

    Args:
        log: the region's control keys.
        flush_s: seconds between flushes.
        clock: wall-clock seconds.
    """

    def __init__(
        self, log: RegionLog, *, flush_s: float = 1.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._log = log
        self.flush_s = flush_s
        self._clock = clock
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flushed = 0

    def touch(self, key_text: str) -> None:
        """Mark ``key_text`` used now."""
        now = self._clock()
        with self._lock:
            self._pending[key_text] = now

    def flush(self) -> int:
        """Write the pending access times; how many keys were written."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            self._log.touch(batch)
        except GeoshardError:
            with self._lock:  # keep them for the next round (newer times win)
                for k, t in batch.items():
                    self._pending[k] = max(t, self._pending.get(k, t))
            return 0
        self.flushed += len(batch)
        return len(batch)

    def start(self) -> None:
        """Flush every ``flush_s`` in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="access", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def stop(self) -> None:
        """Stop the thread after a last flush."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(GeoshardError):
            self.flush()
