"""Retry with backoff as a policy object, bounded in attempts and in total time.

The policy knows nothing about any backend: it retries an error exactly when the error
says it may (:attr:`geoshard.errors.GeoshardError.retryable`, True for
:class:`~geoshard.errors.BackendUnavailableError`). A backend translates its client's
exceptions into that taxonomy inside each attempt (the Redis stores do it in
:mod:`geoshard.storage.redis_store`), so every retry decision in geoshard is made in
one place, on one flag.

The delay before attempt ``n + 1`` comes from a :class:`Backoff`: anything with a
``compute(failures) -> seconds`` method, so redis-py's backoff classes fit as well as
the two here.

Examples:
    >>> from geoshard.errors import BackendUnavailableError
    >>> calls = []
    >>> def flaky() -> str:
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise BackendUnavailableError("connection refused")
    ...     return "ok"
    >>> policy = RetryPolicy(max_attempts=5, backoff=ConstantBackoff(0.0))
    >>> policy.call(flaky, what="GET k"), len(calls)
    ('ok', 3)
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from geoshard.errors import ConfigError, GeoshardError, RetryExhaustedError

__all__ = [
    "DEFAULT_HINT",
    "Backoff",
    "ConstantBackoff",
    "ExponentialBackoff",
    "RetryPolicy",
    "RetryStats",
    "describe_error",
]

T = TypeVar("T")

#: What a retry-exhausted message suggests when the caller gives no backend-specific hint.
DEFAULT_HINT = "Check that the backend is up (geoshard status) or raise the retry budget"


class Backoff(Protocol):
    """Seconds to wait after the ``failures``-th failed attempt (1 for the first)."""

    def compute(self, failures: int) -> float:
        """The delay in seconds before the next attempt."""
        ...


@dataclass(frozen=True)
class ConstantBackoff:
    """The same delay after every failure.

    Examples:
        >>> ConstantBackoff(0.1).compute(5)
        0.1
    """

    delay_s: float

    def compute(self, failures: int) -> float:
        """``delay_s``, whatever the number of failures."""
        return self.delay_s


@dataclass(frozen=True)
class ExponentialBackoff:
    """``min(cap_s, base_s * 2**failures)``, drawn uniformly from ``[0, that]`` with jitter.

    Jitter (the default, as redis-py's ``ExponentialWithJitterBackoff``) spreads the
    retries of many clients that failed together, so they do not hit a recovering node
    in lock-step.

    Examples:
        >>> [ExponentialBackoff(base_s=0.1, cap_s=1.0, jitter=False).compute(n) for n in (1, 2, 4)]
        [0.2, 0.4, 1.0]
    """

    base_s: float = 0.02
    cap_s: float = 1.0
    jitter: bool = True

    def compute(self, failures: int) -> float:
        """The delay after the ``failures``-th failure."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(failures, 64))
        return random.uniform(0.0, ceiling) if self.jitter else ceiling


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of the error a backend failure came from.

    A backend error raised ``from`` a client exception is described by that exception
    (``ConnectionError: Connection refused``), which is what an operator searches for.
    """
    cause = exc.__cause__ if isinstance(exc, GeoshardError) else None
    shown = cause if cause is not None else exc
    return f"{type(shown).__name__}: {shown}"


@dataclass
class RetryStats:
    """Counters a store keeps of its retries (chaos runs log these, not only errors).

    Attributes:
        calls: operations run through the policy.
        retries: extra attempts after a retryable error.
        exhausted: operations that gave up.
        errors: retryable errors seen, by the class name of the client exception each
            came from (``ConnectionError``, ``MovedError``, ...).
        topology_refreshes: cluster slot-map reloads.
    """

    calls: int = 0
    retries: int = 0
    exhausted: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    topology_refreshes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_error(self, exc: BaseException) -> None:
        """Count one retryable error by the class name of its client exception."""
        cause = exc.__cause__ if isinstance(exc, GeoshardError) else None
        name = type(cause if cause is not None else exc).__name__
        with self._lock:
            self.errors[name] = self.errors.get(name, 0) + 1


@dataclass(frozen=True)
class RetryPolicy:
    """Retry with backoff, bounded by attempts and by a total time budget.

    An error is retried when it is a :class:`~geoshard.errors.GeoshardError` whose
    ``retryable`` flag is set; anything else propagates at once. The policy gives up
    when ``max_attempts`` attempts failed, or when the next delay would cross
    ``budget_s`` since the first attempt, and raises
    :class:`~geoshard.errors.RetryExhaustedError` naming the operation.

    Args:
        max_attempts: attempts in total (1 = no retry).
        budget_s: total seconds the operation may take, backoff included.
        backoff: the delay after each failure (exponential with jitter by default).
        sleep: injected for tests.
        clock: monotonic seconds, injected for tests.

    Raises:
        ConfigError: ``max_attempts < 1`` or ``budget_s`` not a finite number > 0.

    Examples:
        >>> policy = RetryPolicy(max_attempts=3, budget_s=1.0, backoff=ConstantBackoff(0.0))
        >>> policy.call(lambda: 42, what="GET k")
        42
    """

    max_attempts: int = 10
    budget_s: float = 10.0
    backoff: Backoff = field(default_factory=ExponentialBackoff)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise ConfigError(f"max_attempts(={self.max_attempts!r}) must be an integer >= 1.")
        if not (
            isinstance(self.budget_s, (int, float))
            and math.isfinite(self.budget_s)
            and self.budget_s > 0
        ):
            raise ConfigError(f"budget_s(={self.budget_s!r}) must be a finite number > 0.")

    def call(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        on_retry: Callable[[BaseException, int], None] | None = None,
        stats: RetryStats | None = None,
        hint: str = DEFAULT_HINT,
    ) -> T:
        """Run ``fn`` until it returns, a final error escapes, or the policy gives up.

        Args:
            fn: the operation; it must be safe to repeat (idempotent).
            what: names the operation and server in the error message.
            on_retry: called with the error and the attempt number before each backoff
                (refresh a topology here).
            stats: counters to update.
            hint: what the give-up message tells the operator to do.

        Raises:
            RetryExhaustedError: attempts or budget exhausted on retryable errors.
        """
        start = self.clock()
        if stats is not None:
            stats.calls += 1
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except GeoshardError as exc:
                if not exc.retryable:
                    raise
                if stats is not None:
                    stats.record_error(exc)
                elapsed = self.clock() - start
                delay = max(0.0, float(self.backoff.compute(attempt)))
                reason = ""
                if attempt >= self.max_attempts:
                    reason = f"max_attempts={self.max_attempts}"
                elif elapsed + delay > self.budget_s:
                    reason = f"budget_s={self.budget_s:g}"
                if reason:
                    if stats is not None:
                        stats.exhausted += 1
                    raise RetryExhaustedError(
                        f"{what} failed after {attempt} attempt(s) in {elapsed:.2f} s "
                        f"({reason} reached): {describe_error(exc)}. {hint}",
                        attempts=attempt,
                        elapsed_s=elapsed,
                        last=exc,
                    ) from exc
                if stats is not None:
                    stats.retries += 1
                if on_retry is not None:
                    on_retry(exc, attempt)
                self.sleep(delay)
