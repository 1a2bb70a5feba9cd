"""RetryPolicy on its own (no server): attempts, time budget, what is retried, counters;
and the translation of redis-py errors into the taxonomy the policy branches on."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis.exceptions as rex

from geoshard.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigError,
    DurabilityError,
    InputError,
    ResidencyError,
    RetryExhaustedError,
)
from geoshard.storage.redis_store import translate_redis_error
from geoshard.storage.retry import ConstantBackoff, ExponentialBackoff, RetryPolicy, RetryStats


class FakeTime:
    """A clock that moves only when the policy sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    def clock(self) -> float:
        return self.now


def failing(n: int, exc: BaseException) -> tuple[Callable[[], str], list[int]]:
    """A function that raises ``exc`` on its first ``n`` calls, then returns "ok"."""
    calls = [0]

    def fn() -> str:
        calls[0] += 1
        if calls[0] <= n:
            raise exc
        return "ok"

    return fn, calls


def unavailable(native: BaseException) -> BackendUnavailableError:
    """A retryable error raised from ``native``, as a backend's attempt wrapper does."""
    try:
        raise BackendUnavailableError(f"redis n:1: GET k failed: {native}") from native
    except BackendUnavailableError as exc:
        return exc


def test_retries_with_exponential_backoff_until_success() -> None:
    t = FakeTime()
    policy = RetryPolicy(
        max_attempts=5,
        budget_s=10,
        backoff=ExponentialBackoff(base_s=0.1, cap_s=1, jitter=False),
        sleep=t.sleep,
        clock=t.clock,
    )
    fn, calls = failing(3, unavailable(rex.ConnectionError("refused")))
    stats = RetryStats()
    assert policy.call(fn, what="GET k", stats=stats) == "ok"
    assert calls[0] == 4
    assert t.sleeps == pytest.approx([0.2, 0.4, 0.8])
    # counted by the client exception the error came from, which is what operators grep
    assert (stats.calls, stats.retries, stats.errors) == (1, 3, {"ConnectionError": 3})


def test_gives_up_after_max_attempts_naming_the_operation_and_the_cause() -> None:
    t = FakeTime()
    policy = RetryPolicy(
        max_attempts=3, budget_s=10, backoff=ConstantBackoff(0.1), sleep=t.sleep, clock=t.clock
    )
    last = unavailable(rex.ClusterDownError("The cluster is down"))
    fn, calls = failing(99, last)
    with pytest.raises(
        RetryExhaustedError,
        match=r"redis 10\.0\.0\.1:7000: SET k failed after "
        r"3 attempt\(s\) in 0\.20 s \(max_attempts=3 "
        r"reached\): ClusterDownError: The cluster is "
        r"down\. Check that the backend is up",
    ) as info:
        policy.call(fn, what="redis 10.0.0.1:7000: SET k")
    assert calls[0] == 3
    assert (info.value.attempts, info.value.last, info.value.retryable) == (3, last, False)


def test_gives_up_when_the_next_backoff_would_cross_the_budget() -> None:
    t = FakeTime()
    policy = RetryPolicy(
        max_attempts=100, budget_s=1.0, backoff=ConstantBackoff(0.3), sleep=t.sleep, clock=t.clock
    )
    fn, calls = failing(99, BackendUnavailableError("slow"))
    with pytest.raises(
        RetryExhaustedError,
        match=r"budget_s=1 reached.*BackendUnavailableError: "
        r"slow\. raise the budget",
    ):
        policy.call(fn, what="GET k", hint="raise the budget")
    assert calls[0] == 4 and t.now == pytest.approx(0.9)


@pytest.mark.parametrize(
    "exc",
    [
        BackendError("WRONGTYPE"),
        DurabilityError("acked by 0 of 1", node="n:1", acked=0, required=1),
        InputError("bad key"),
        ResidencyError("eu data in us-east"),
        ValueError("bug"),
        rex.ConnectionError("a client exception nobody translated"),
    ],
)
def test_only_errors_flagged_retryable_are_retried(exc: BaseException) -> None:
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
    fn, _ = failing(2, unavailable(rex.MovedError("3999 127.0.0.1:6381")))
    policy.call(
        fn, what="GET k", on_retry=lambda e, n: seen.append((type(e.__cause__).__name__, n))
    )
    assert seen == [("MovedError", 1), ("MovedError", 2)]


def test_jittered_backoff_stays_under_its_exponential_ceiling() -> None:
    backoff = ExponentialBackoff(base_s=0.01, cap_s=0.05)
    delays = [backoff.compute(n) for n in (1, 2, 3) for _ in range(200)]
    assert all(0 <= d <= 0.05 for d in delays)
    assert max(backoff.compute(1) for _ in range(200)) <= 0.02
    assert len(set(delays)) > 100  # jittered, not constant


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, r"max_attempts\(=0\) must be an integer >= 1"),
        ({"max_attempts": True}, r"max_attempts\(=True\) must be an integer >= 1"),
        ({"budget_s": 0}, r"budget_s\(=0\) must be a finite number > 0"),
        ({"budget_s": float("inf")}, r"budget_s\(=inf\) must be a finite number > 0"),
    ],
)
def test_bad_policies_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("native", "retryable"),
    [
        (rex.ConnectionError("Connection refused"), True),
        (rex.TimeoutError("Timeout reading from socket"), True),
        (rex.BusyLoadingError("Redis is loading the dataset in memory"), True),
        (rex.ClusterDownError("The cluster is down"), True),
        (rex.MovedError("3999 127.0.0.1:6381"), True),
        (rex.AskError("3999 127.0.0.1:6381"), True),
        (rex.TryAgainError("TRYAGAIN"), True),
        (rex.SlotNotCoveredError("slot 3999 not covered"), True),
        (rex.ReadOnlyError("You can't write against a read only replica."), True),
        (rex.AuthenticationError("invalid password"), False),
        (rex.AuthorizationError("NOPERM"), False),
        (rex.ResponseError("WRONGTYPE Operation against a key"), False),
        (rex.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"), False),
        (rex.RedisClusterException("Redis Cluster cannot be connected"), False),
    ],
)
def test_redis_errors_translate_to_the_taxonomy(native: BaseException, retryable: bool) -> None:
    err = translate_redis_error(native, node="10.0.0.1:7000", op="GET k")
    assert isinstance(err, BackendError)
    assert err.retryable is retryable
    assert isinstance(err, BackendUnavailableError) is retryable
    assert str(err) == f"redis 10.0.0.1:7000: GET k failed: {type(native).__name__}: {native}"
