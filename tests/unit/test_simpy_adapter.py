"""The SimPy private state the engine's event loop relies on (``sim/simpy_adapter.py``).

The engine runs its lightweight events on SimPy's own heap. These tests pin what it
uses, so that a SimPy upgrade that changes them fails here, not as wrong results.
"""

from __future__ import annotations

from typing import Any

import pytest
import simpy

from geoshard.sim.simpy_adapter import NORMAL, URGENT, EventLoop


class _Ev:
    _ok = True
    callbacks: list[Any] | None = None

    def __init__(self, name: str) -> None:
        self.name = name


def test_the_private_names_exist_with_the_expected_shapes() -> None:
    env = simpy.Environment()
    assert isinstance(env._queue, list) and env._queue == []
    first = next(env._eid)
    assert next(env._eid) == first + 1
    assert env._now == 0
    assert (URGENT, NORMAL) == (0, 1)
    ok = env.event()
    ok.succeed("v")
    assert ok._ok is True and ok._value == "v"
    bad = env.event()
    err = ValueError("x")
    bad.fail(err)
    assert bad._ok is False and bad._value is err
    assert not hasattr(bad, "_defused")
    bad.defused = True
    assert bad._defused


def test_engine_events_and_simpy_processes_interleave_in_time_order() -> None:
    env = simpy.Environment()
    loop = EventLoop(env)
    seen: list[tuple[float, str]] = []

    def proc() -> Any:
        yield env.timeout(1.5)
        seen.append((env.now, "process"))
        yield env.timeout(1.0)
        seen.append((env.now, "process again"))

    env.process(proc())
    loop.schedule(_Ev("one"), 1.0, [lambda e: seen.append((env.now, e.name))])
    loop.schedule(_Ev("two"), 2.0, [lambda e: seen.append((env.now, e.name))])
    loop.run_until(3.0)
    assert seen == [(1.0, "one"), (1.5, "process"), (2.0, "two"), (2.5, "process again")]
    assert env.now == 3.0
    # the same schedule through SimPy's own loop gives the same order
    env2 = simpy.Environment()
    seen2: list[float] = []

    def proc2() -> Any:
        yield env2.timeout(1.5)
        seen2.append(env2.now)

    env2.process(proc2())
    env2.run(until=3.0)
    assert seen2 == [1.5]


def test_events_at_the_stop_time_stay_on_the_heap() -> None:
    env = simpy.Environment()
    loop = EventLoop(env)
    seen: list[str] = []
    loop.schedule(_Ev("at-until"), 2.0, [lambda e: seen.append(e.name)])
    loop.run_until(2.0)
    assert seen == [] and env.now == 2.0
    loop.run_until(2.5)
    assert seen == ["at-until"]


def test_a_failed_simpy_event_nobody_handles_is_raised() -> None:
    env = simpy.Environment()
    loop = EventLoop(env)

    def boom() -> Any:
        yield env.timeout(1.0)
        raise RuntimeError("a fault process broke")

    env.process(boom())
    with pytest.raises(RuntimeError, match="a fault process broke"):
        loop.run_until(5.0)
