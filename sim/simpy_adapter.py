"""The one place where the simulator touches SimPy's private state.

The engine keeps its requests as small callback objects on SimPy's own event heap
(``Environment._queue``) and runs them with a dispatch loop that does what
``Environment.step`` does (pop, advance the clock, call the callbacks, re-raise a failed
event nobody handled) without its per-event overhead. SimPy processes (the fault
schedule) run on the same heap, so both kinds of events interleave in exact time order.

Private names used here: ``Environment._queue`` (the heap of ``(time, priority, eid,
event)``), ``Environment._eid`` (the tie-breaking counter), ``Environment._now``,
``Event._ok``/``_defused``/``_value``. ``tests/unit/test_simpy_adapter.py`` checks them
against the SimPy version pinned in ``pyproject.toml``.

Examples:
    >>> import simpy
    >>> env = simpy.Environment()
    >>> loop = EventLoop(env)
    >>> seen = []
    >>> class Ev:
    ...     _ok = True
    ...     callbacks = None
    >>> ev = Ev()
    >>> loop.schedule(ev, 5.0, [lambda e: seen.append(env.now)])
    >>> loop.run_until(10.0)
    >>> seen
    [5.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from heapq import heappop, heappush, heapreplace
from itertools import count
from typing import Any

import simpy

__all__ = ["NORMAL", "URGENT", "EventLoop"]

#: SimPy's priorities: at the same time, URGENT events run before NORMAL ones.
URGENT = simpy.events.URGENT
NORMAL = simpy.events.NORMAL


class EventLoop:
    """Runs SimPy's event heap with the engine's own lightweight events on it.

    An engine event is any object with a ``callbacks`` list attribute and ``_ok = True``
    (the engine's request objects): :meth:`schedule` pushes it, and when its time comes
    every callback in the list is called with the object.

    Args:
        env: the SimPy environment whose heap and clock are used.
    """

    __slots__ = ("_eid", "_heap", "_sseq", "_streams", "env")

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self._heap: list[Any] = env._queue
        self._eid = env._eid
        self._streams: list[list[Any]] = []  # heap of [next time, seq, index, times, items, cb]
        self._sseq = count()

    @property
    def now(self) -> float:
        """The current simulated time."""
        return self.env._now

    def schedule(
        self, ev: Any, at: float, callbacks: list[Callable[[Any], None]], priority: int = NORMAL
    ) -> None:
        """Run ``callbacks`` on ``ev`` at time ``at`` (>= now)."""
        ev.callbacks = callbacks
        heappush(self._heap, (at, priority, next(self._eid), ev))

    def add_stream(
        self, times: list[float], items: list[Any], callback: Callable[[Any], None]
    ) -> None:
        """Call ``callback(items[i])`` at ``times[i]`` (increasing, >= now), in time order
        with the heap's events (a heap event at the same time runs first).

        A stream is not on the heap: a batch of arrivals costs no heap operation per item,
        only one per run of items that no other event interrupts.
        """
        if times:
            heappush(self._streams, [times[0], next(self._sseq), 0, times, items, callback])

    @property
    def next_id(self) -> Callable[[], int]:
        """The environment's tie-breaking counter (events at equal times run in id order)."""
        return self._eid.__next__

    @property
    def heap(self) -> list[Any]:
        """The event heap itself (for engines that push with ``heapq.heappush``)."""
        return self._heap

    def run_until(self, until: float) -> None:
        """Process every event scheduled before ``until``; leave the clock at ``until``.

        Events at exactly ``until`` stay on the heap (as with ``Environment.run(until)``).

        Raises:
            Exception: the value of a failed SimPy event that no callback defused.
        """
        env = self.env
        heap = self._heap
        streams = self._streams
        pop = heappop
        inf = math.inf
        while True:
            ht = heap[0][0] if heap else inf
            if streams and streams[0][0] < ht and streams[0][0] < until:
                s = streams[0]
                # run the stream up to the next time anything else is due
                lim = ht if ht < until else until
                for o in streams[1:3]:  # the next stream is one of the heap's children
                    if o[0] < lim:
                        lim = o[0]
                _, _, i, times, items, cb = s
                n = len(times)
                while True:
                    env._now = times[i]
                    cb(items[i])
                    i += 1
                    if i == n:
                        break
                    t = times[i]
                    if t >= lim or (heap and heap[0][0] <= t):
                        break
                if i == n:
                    pop(streams)
                else:
                    s[0], s[2] = times[i], i
                    heapreplace(streams, s)
                continue
            if ht >= until:
                break
            t, _, _, ev = pop(heap)
            env._now = t
            callbacks = ev.callbacks
            ev.callbacks = None
            for cb in callbacks:
                cb(ev)
            if not ev._ok and not hasattr(ev, "_defused"):
                raise ev._value
        if env._now < until:
            env._now = until
