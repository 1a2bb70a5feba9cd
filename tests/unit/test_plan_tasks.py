"""The planner's task runner: answers in argument order, warm Ray workers reused, and a
worker past its memory limit replaced by a fresh one.

* Serially (``workers=1``): ``[fn(*a) for a in args]`` with progress after every task.
* On Ray: the same answers in the same order; the same few worker processes run every
  task (two workers for six tasks); with a memory limit every worker exceeds, each task
  gets a fresh process and each replaced worker is counted; an existing Ray is left
  running. A task whose worker dies is run again on a fresh worker, a few times, then
  its error is raised; the runner still works.
"""

from __future__ import annotations

import os

import pytest

from geoshard.sim.tasks import RAY_START_ATTEMPTS, Runner, init_ray, rss_bytes, run_tasks


def test_serial_tasks_answer_in_argument_order_with_progress() -> None:
    seen: list[tuple[int, int]] = []
    assert run_tasks(pow, [(2, 3), (3, 2), (5, 0)], on_done=lambda d, n: seen.append((d, n))) == [
        8,
        9,
        1,
    ]
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert rss_bytes() > 10_000_000  # this interpreter holds more than 10 MB


def test_ray_workers_are_reused_and_replaced_past_their_memory_limit() -> None:
    ray = pytest.importorskip("ray")
    init_ray(None, 2)
    try:
        with Runner(workers=2) as runner:
            seen: list[tuple[int, int]] = []
            args = [(2, k) for k in range(6)]
            assert runner.map(pow, args, lambda d, n: seen.append((d, n))) == [
                2**k for k in range(6)
            ]
            assert seen == [(d, 6) for d in range(1, 7)]
            pids = runner.map(os.getpid, [()] * 6)
            assert len(set(pids)) == 2 and os.getpid() not in pids
            assert runner.retired == 0
        with Runner(workers=2, worker_rss_limit_bytes=1) as runner:
            pids = runner.map(os.getpid, [()] * 4)
            assert len(set(pids)) == 4 and runner.retired == 4
        with Runner(workers=2) as runner:
            with pytest.raises(ray.exceptions.RayActorError):
                runner.map(os._exit, [(3,)])  # kills its worker every time it runs
            assert runner.map(pow, [(3, 2)]) == [9]  # the dead worker was replaced
        assert ray.is_initialized()  # the runners did not start this Ray, so left it running
    finally:
        ray.shutdown()


def test_a_local_ray_that_times_out_at_start_is_tried_again_then_its_error_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ray = pytest.importorskip("ray")
    calls: list[str] = []

    def timing_out(**kw: object) -> None:
        calls.append("init")
        if calls.count("init") < failures:
            raise Exception("The current node timed out during startup.")

    monkeypatch.setattr(ray, "init", timing_out)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    failures = RAY_START_ATTEMPTS  # the last attempt succeeds
    init_ray(None, 2)
    assert calls == ["init", "shutdown"] * (RAY_START_ATTEMPTS - 1) + ["init"]
    calls.clear()
    failures = RAY_START_ATTEMPTS + 1  # every attempt fails
    with pytest.raises(Exception, match="during startup"):
        init_ray(None, 2)
    assert calls.count("init") == RAY_START_ATTEMPTS
    calls.clear()

    def refused(**kw: object) -> None:
        calls.append("init")
        raise ValueError("bad option")

    monkeypatch.setattr(ray, "init", refused)
    with pytest.raises(ValueError, match="bad option"):
        init_ray(None, 2)
    assert calls == ["init", "shutdown"]  # any other error is not retried
    assert "RAY_worker_niceness" not in os.environ
