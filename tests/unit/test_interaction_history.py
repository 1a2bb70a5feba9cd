"""A user's interactions read while the region worker drains the log: every interleaving
of the drain's steps (cold append, cursor, trim) with the reader's calls shows every
event once. (The old order, cold before cursor, lost every event drained in between: an
acknowledged write a read did not show.)"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any, cast

import pytest

from geoshard.cluster.ingest import interaction_history
from geoshard.cluster.regionlog import RegionLog
from geoshard.keys import DataKey, UserKey
from geoshard.storage.base import ColdStore

USER = UserKey("us", 0)
KEY = DataKey("interactions", USER)


def _event(n: int, user: UserKey = USER) -> dict[str, Any]:
    return {"user_id": str(user), "item_id": f"sku-{n}", "type": "view", "ts": 1.0 + n,
            "event_id": f"e{n}"}  # fmt: skip


class _Region:
    """A write log, its drain cursor and a cold tier; the drain runs in three steps, in
    the worker's order (cold append, then the cursor, then trim)."""

    def __init__(self, drained: int, pending: int) -> None:
        self.cold: list[bytes] = []
        self.log: list[tuple[str, dict[bytes, bytes]]] = []
        self.cursor_id = "0"
        for n in range(drained + pending):
            ev = _event(n)
            other = _event(1000 + n, UserKey("us", 1))  # someone else's, interleaved
            for e in (ev, other):
                self.log.append((f"{len(self.log) + 1}-0", self._fields(e)))
        # the first `drained` of ours (and the others between them) are already drained
        cut = 2 * drained
        for _, f in self.log[:cut]:
            if f[b"key"] == b"interactions:us:0":
                self.cold.append(f[b"value"])
        self.cursor_id = self.log[cut - 1][0] if cut else "0"
        self.log = self.log[cut:]
        self.hook: Callable[[], None] = lambda: None

    @staticmethod
    def _fields(ev: dict[str, Any]) -> dict[bytes, bytes]:
        return {
            b"kind": b"interaction",
            b"key": f"interactions:{ev['user_id']}".encode(),
            b"value": json.dumps(ev).encode(),
        }

    @staticmethod
    def _n(sid: str) -> int:
        return int(sid.split("-")[0])

    # the reader's view (each call first lets the drain take its steps due here)
    def cursor(self, name: str) -> str:
        assert name == "drain"
        self.hook()
        return self.cursor_id

    def read(self, after: str, count: int = 1000) -> list[tuple[str, dict[bytes, bytes]]]:
        self.hook()
        start = 0 if after == "0" else self._n(after)
        return [r for r in self.log if self._n(r[0]) > start][:count]

    def history(self, key: DataKey) -> list[bytes]:
        assert key == KEY
        self.hook()
        return list(self.cold)

    # the drain, step by step
    def drain_steps(self) -> list[Callable[[], None]]:
        batch = list(self.log)
        if not batch:
            return [lambda: None] * 3

        def append_cold() -> None:
            self.cold += [f[b"value"] for _, f in batch if f[b"key"] == b"interactions:us:0"]

        def advance() -> None:
            self.cursor_id = batch[-1][0]

        def trim() -> None:
            self.log = [r for r in self.log if self._n(r[0]) > self._n(batch[-1][0])]

        return [append_cold, advance, trim]


def _read_with_drain_at(points: tuple[int, ...], drained: int, pending: int) -> set[str]:
    """Read once, running drain step s just before the reader's call number points[s]."""
    region = _Region(drained, pending)
    steps = region.drain_steps()
    calls = {"n": 0}

    def hook() -> None:
        for step, at in zip(steps, points, strict=True):
            if at == calls["n"]:
                step()
        calls["n"] += 1

    region.hook = hook
    got = interaction_history(cast(RegionLog, region), cast(ColdStore, region), KEY)
    if calls["n"] <= max(points):  # steps due after the reader's last call: run them now
        for step, at in zip(steps, points, strict=True):
            if at >= calls["n"]:
                step()
    assert len({e["event_id"] for e in got}) == len(got), "an event shown twice"
    return {e["event_id"] for e in got}


@pytest.mark.parametrize(("drained", "pending"), [(0, 3), (2, 3), (4, 0)])
def test_every_interleaving_with_a_drain_shows_every_event(drained: int, pending: int) -> None:
    want = {f"e{n}" for n in range(drained + pending)}
    # the reader makes 3 calls (cursor, read, history); each drain step runs before one
    # of them or after the last, in the drain's own order
    for points in itertools.combinations_with_replacement(range(4), 3):
        assert _read_with_drain_at(points, drained, pending) == want, points


def test_the_newest_events_are_kept_oldest_first() -> None:
    region = _Region(2, 3)
    got = interaction_history(cast(RegionLog, region), cast(ColdStore, region), KEY, limit=4)
    assert [e["event_id"] for e in got] == ["e1", "e2", "e3", "e4"]
    assert interaction_history(cast(RegionLog, region), cast(ColdStore, region), KEY, 0) == []
