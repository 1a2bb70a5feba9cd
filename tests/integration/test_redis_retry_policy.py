"""RetryPolicy on its own (no server): attempts, time budget, what is retried, counters."""

from __future__ import annotations

import pytest
import redis.exceptions as rex
from redis.backoff import ConstantBackoff, ExponentialBackoff

from geoshard.errors import ConfigError
from geoshard.storage.redis_store import RetryExhaustedError, RetryPolicy, RetryStats


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    def clock(self) -> float:
        return self.now


def failing(n: int, exc: BaseException):  # type: ignore[no-untyped-def]
    calls = [0]

    def fn() -> str:
        calls[0] += 1
        if calls[0] <= n:
            raise exc
        return "ok"

    return fn, calls


def test_retries_with_exponential_backoff_until_success() -> None:
    t = FakeTime()
    policy = RetryPolicy(max_attempts=5, budget_s=10, backoff=ExponentialBackoff(cap=1, base=0.1),
                         sleep=t.sleep, clock=t.clock)
    fn, calls = failing(3, rex.ConnectionError("refused"))
    stats = RetryStats()
    assert policy.call(fn, what="GET k", stats=stats) == "ok"
    assert calls[0] == 4
    assert t.sleeps == pytest.approx([0.2, 0.4, 0.8])
    assert (stats.calls, stats.retries, stats.errors) == (1, 3, {"ConnectionError": 3})


def test_gives_up_after_max_attempts_naming_the_operation() -> None:
    t = FakeTime()
    policy = RetryPolicy(max_attempts=3, budget_s=10, backoff=ConstantBackoff(0.1),
                         sleep=t.sleep, clock=t.clock)
    fn, calls = failing(99, rex.ClusterDownError("The cluster is down"))
    with pytest.raises(RetryExhaustedError, match=r"redis 10\.0\.0\.1:7000: SET k failed after "
                                                  r"3 attempt\(s\) in 0\.20 s \(max_attempts=3 "
                                                  r"reached\): ClusterDownError") as info:
        policy.call(fn, what="redis 10.0.0.1:7000: SET k")
    assert calls[0] == 3 and info.value.attempts == 3


def test_gives_up_when_the_next_backoff_would_cross_the_budget() -> None:
    t = FakeTime()
    policy = RetryPolicy(max_attempts=100, budget_s=1.0, backoff=ConstantBackoff(0.3),
                         sleep=t.sleep, clock=t.clock)
    fn, calls = failing(99, rex.TimeoutError("slow"))
    with pytest.raises(RetryExhaustedError, match=r"budget_s=1 reached"):
        policy.call(fn, what="GET k")
    assert calls[0] == 4 and t.now == pytest.approx(0.9)


@pytest.mark.parametrize("exc", [rex.ResponseError("WRONGTYPE"), ValueError("bug"),
                                 rex.AuthenticationError("bad password")])
def test_non_retryable_errors_propagate_at_once(exc: BaseException) -> None:
    t = FakeTime()
    policy = RetryPolicy(sleep=t.sleep, clock=t.clock)
    fn, calls = failing(1, exc)
    with pytest.raises(type(exc), match=str(exc)):
        policy.call(fn, what="GET k")
    assert calls[0] == 1 and t.sleeps == []


def test_on_retry_runs_before_each_backoff() -> None:
    t = FakeTime()
    seen: list[tuple[str, int]] = []
    policy = RetryPolicy(backoff=ConstantBackoff(0), sleep=t.sleep, clock=t.clock)
    fn, _ = failing(2, rex.MovedError("3999 127.0.0.1:6381"))
    policy.call(fn, what="GET k", on_retry=lambda e, n: seen.append((type(e).__name__, n)))
    assert seen == [("MovedError", 1), ("MovedError", 2)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_attempts": 0}, r"max_attempts\(=0\) must be an integer >= 1"),
    ({"budget_s": 0}, r"budget_s\(=0\) must be a finite number > 0"),
])
def test_bad_policies_are_config_errors(kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=message):
        RetryPolicy(**kwargs)
