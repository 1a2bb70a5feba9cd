"""The version envelope of a replicated value: last-writer-wins across regions.

A personal value written in one region is copied to the key's other replica regions
asynchronously (:mod:`geoshard.cluster.replication`), and during a failover a replica
region may take writes for a key whose primary is down. Every such value therefore
carries the version the entry region gave it (nanoseconds since the epoch), and a copy
is applied only when it is newer than the one present: replaying a log twice, or out of
order, converges on the newest write.

Layout: ``b"GS\\x01"`` + 8-byte big-endian version + payload. Values without the magic
(written by tools outside the deployment) have version 0.

Examples:
    >>> unwrap(wrap(42, b"{}"))
    (42, b'{}')
    >>> unwrap(b"plain")
    (0, b'plain')
"""

from __future__ import annotations

import threading
import time

__all__ = ["ABSENT", "MAGIC", "new_version", "unwrap", "wrap"]

MAGIC = b"GS\x01"
#: What the cache walk holds for a key the tiers do not have (negative caching): a read
#: of an absent key then stops at the first level instead of reaching the cold tier
#: every time. Never written to a tier; a write of the key invalidates it like any value.
ABSENT = b"GS\x00absent"
_HEAD = len(MAGIC) + 8


class _Versions:
    """Wall-clock nanoseconds, strictly increasing in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> int:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            return self._last


_VERSIONS = _Versions()


def new_version() -> int:
    """A version for a new write: wall-clock nanoseconds, strictly increasing in this process."""
    return _VERSIONS.next()


def wrap(version: int, payload: bytes) -> bytes:
    """``payload`` with its version in front."""
    return MAGIC + int(version).to_bytes(8, "big") + payload


def unwrap(data: bytes) -> tuple[int, bytes]:
    """``(version, payload)`` of an enveloped value (version 0 when there is no envelope)."""
    if data[: len(MAGIC)] == MAGIC and len(data) >= _HEAD:
        return int.from_bytes(data[len(MAGIC) : _HEAD], "big"), data[_HEAD:]
    return 0, data
