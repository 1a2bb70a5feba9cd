"""Ingestion: a bounded buffer with priority lanes in each API process, flushed to the
region's write log (a Redis Stream) and acknowledged only when durable.

``POST /v1/interactions`` validates a batch, then :meth:`IngestBuffer.submit` admits the
whole batch or none of it: when the buffer has no room for every item the call raises
:class:`BufferFullError` (the API answers 429 with ``Retry-After``) and nothing is
written. Admitted items wait in one lane per priority (purchases, then clicks, then
views: :data:`LANES`); a flusher thread takes up to ``flush_batch`` items, highest lane
first, appends them to the log with ``XADD`` and ``WAIT`` (:class:`RegionLog
<geoshard.cluster.regionlog.RegionLog>`), and only then wakes the requests whose items
it wrote. A request is acknowledged when every one of its items is in the stream on the
primary and on ``wait_replicas`` replicas; so an API process killed at any moment loses
nothing it acknowledged (what it had not acknowledged, the client retries: event ids
make a retry idempotent, the drain keeps the first copy of each event id).

The region worker drains the log into the cold tier (:mod:`geoshard.cluster.worker`).

Examples:
    >>> buf = IngestBuffer(log, capacity=1024, flush_batch=256)   # doctest: +SKIP
    >>> buf.start()                                                # doctest: +SKIP
    >>> buf.submit([Interaction(UserKey("eu", 1), "sku-1", "click", 1.7e9, "e1")], ["eu-central"])  # doctest: +SKIP
    ['1718000000000-0']
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from geoshard.cluster.regionlog import RegionLog
from geoshard.errors import BackendUnavailableError, CapacityError, GeoshardError
from geoshard.keys import DataKey, UserKey
from geoshard.storage.base import ColdStore
from geoshard.storage.keylayout import key_text

__all__ = [
    "LANES",
    "BufferFullError",
    "IngestBuffer",
    "Interaction",
    "interaction_fields",
    "interaction_history",
]

#: Interaction types in priority order: a purchase is flushed before a click, a click
#: before a view.
LANES: tuple[str, ...] = ("purchase", "click", "view")


class BufferFullError(CapacityError):
    """The ingestion buffer has no room for the batch; nothing was written.

    Attributes:
        retry_after_s: when to try again.
    """

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Interaction:
    """One validated user interaction."""

    user: UserKey
    item_id: str
    type: str
    ts: float
    event_id: str

    def to_json(self) -> dict[str, object]:
        """The interaction as the API and the cold tier write it."""
        return {
            "user_id": str(self.user),
            "item_id": self.item_id,
            "type": self.type,
            "ts": self.ts,
            "event_id": self.event_id,
        }


def interaction_fields(it: Interaction, targets: Sequence[str]) -> dict[str, str]:
    """The write-log entry of an interaction (``targets``: regions to ship it to)."""
    return {
        "kind": "interaction",
        "key": f"interactions:{it.user}",
        "value": json.dumps(it.to_json(), separators=(",", ":")),
        "targets": ",".join(targets),
    }


def interaction_history(
    log: RegionLog, cold: ColdStore, key: DataKey, limit: int = 1000
) -> list[dict[str, Any]]:
    """The interactions of ``key``'s owner held in a region: drained (the cold tier) and
    not yet drained (the write log after the drain cursor); each event once, the newest
    ``limit``, oldest first.

    The region worker drains concurrently (cold append, then cursor, then trim), so the
    reads go cursor, then log, then cold: an entry drained after the cursor was read is
    either still in the log or, once trimmed, already in the cold tier when it is read.
    (Cold before cursor loses every entry drained in between: acknowledged writes that
    a read does not show.)
    """
    cursor = log.cursor("drain")
    want = key_text(key).encode()
    pending: list[dict[str, Any]] = []
    while True:
        rows = log.read(cursor, count=5000)
        for sid, fields in rows:
            if fields.get(b"kind") == b"interaction" and fields.get(b"key") == want:
                pending.append(json.loads(fields[b"value"]))
            cursor = sid
        if len(rows) < 5000:
            break
    out: dict[str, dict[str, Any]] = {}
    for raw in cold.history(key):
        ev = json.loads(raw)
        out.setdefault(ev["event_id"], ev)
    for ev in pending:
        out.setdefault(ev["event_id"], ev)
    events = sorted(out.values(), key=lambda e: (e["ts"], e["event_id"]))
    return events[-limit:] if limit > 0 else []


@dataclass
class _Ticket:
    """One submitted batch: done when every item was written (or one failed)."""

    left: int
    ids: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class IngestBuffer:
    """Bounded, prioritised, durable-on-ack ingestion into one region's write log.

    Args:
        log: the region's control keys (the stream is :attr:`RegionLog.log_key`).
        capacity: items the buffer holds, all lanes together.
        flush_batch: items per stream write.
        retry_after_s: the ``Retry-After`` a full buffer answers with.
    """

    def __init__(
        self,
        log: RegionLog,
        *,
        capacity: int = 1024,
        flush_batch: int = 256,
        retry_after_s: float = 1.0,
    ) -> None:
        self._log = log
        self.capacity = capacity
        self.flush_batch = flush_batch
        self.retry_after_s = retry_after_s
        self._lanes: dict[str, deque[tuple[dict[str, str], _Ticket, int]]] = {
            lane: deque() for lane in LANES
        }
        self._depth = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.flushed = 0
        self.rejected = 0

    @property
    def depth(self) -> int:
        """Items waiting to be written."""
        return self._depth

    def submit(
        self,
        items: Sequence[Interaction],
        targets: Sequence[Sequence[str]],
        *,
        timeout_s: float = 10.0,
    ) -> list[str]:
        """Admit ``items`` (with the regions to ship each to) and wait until they are durable.

        Returns:
            The stream id of each item, in order.

        Raises:
            BufferFullError: no room for the whole batch; nothing was admitted.
            BackendUnavailableError: the write did not become durable within ``timeout_s``
                or the stream write failed; the items may or may not be in the stream
                (retry with the same event ids).
        """
        if not items:
            return []
        ticket = _Ticket(left=len(items), ids=[""] * len(items))
        with self._cond:
            if self._stop:
                raise BackendUnavailableError("the API is shutting down; retry on another process")
            if self._depth + len(items) > self.capacity:
                self.rejected += 1
                raise BufferFullError(
                    f"the ingestion buffer holds {self._depth} of {self.capacity} interactions "
                    f"and cannot take {len(items)} more; nothing was written; retry after "
                    f"{self.retry_after_s:g} s",
                    self.retry_after_s,
                )
            for i, (it, tg) in enumerate(zip(items, targets, strict=True)):
                self._lanes[it.type].append((interaction_fields(it, tg), ticket, i))
            self._depth += len(items)
            self._cond.notify()
        if not ticket.done.wait(timeout_s):
            raise BackendUnavailableError(
                f"{len(items)} interactions were not durable within {timeout_s:g} s (the "
                "region's Redis is slow or failing over); they may or may not be written: "
                "retry with the same event ids"
            )
        if ticket.error is not None:
            raise ticket.error
        return ticket.ids

    def _take(self) -> list[tuple[dict[str, str], _Ticket, int]]:
        batch: list[tuple[dict[str, str], _Ticket, int]] = []
        for lane in LANES:
            q = self._lanes[lane]
            while q and len(batch) < self.flush_batch:
                batch.append(q.popleft())
        self._depth -= len(batch)
        return batch

    def flush_once(self) -> int:
        """Write one batch (highest lanes first); how many items were written."""
        with self._cond:
            batch = self._take()
        if not batch:
            return 0
        try:
            ids = self._log.append([fields for fields, _, _ in batch], durable=True)
        except GeoshardError as exc:
            for _, ticket, _ in batch:
                if ticket.error is None:
                    ticket.error = exc
                ticket.done.set()
            return 0
        for (_, ticket, i), sid in zip(batch, ids, strict=True):
            ticket.ids[i] = sid
            ticket.left -= 1
            if ticket.left == 0:
                ticket.done.set()
        self.flushed += len(batch)
        return len(batch)

    def start(self) -> None:
        """Run the flusher in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="ingest-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._depth and not self._stop:
                    self._cond.wait(1.0)
                if self._stop and not self._depth:
                    return
            if not self.flush_once():
                time.sleep(0.01)  # the stream write failed: do not spin

    def stop(self, timeout_s: float = 5.0) -> None:
        """Refuse new batches, flush what is admitted, stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(timeout=timeout_s)
