"""The geoshard error taxonomy.

Every error geoshard raises on purpose derives from :class:`GeoshardError` and carries a
``category`` that the CLI branches on: ``config`` (the spec or the arguments are wrong;
exit code 2), ``residency`` (a datum would leave the regions its jurisdiction allows),
``capacity`` (no healthy replica, overload), ``input`` (a bad id, embedding or payload)
and ``backend`` (a server failed or is unreachable; exit code 3).

Retry logic branches on one flag, ``retryable`` (the redis-py model of an exception
taxonomy): it is True only for :class:`BackendUnavailableError`, the failures after
which the same call may succeed if repeated after a backoff (connection lost, timeout,
failover or slot migration in progress). Every other error is final: retrying a bad
input, a residency refusal or a server's "wrong type" answer cannot help.

A message says what was wrong, with the value, and what to do about it::

    region 'eu-wset' is not in the spec; did you mean 'eu-west'?
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "CapacityError",
    "ConfigError",
    "DurabilityError",
    "GeoshardError",
    "InputError",
    "NoHealthyReplicaError",
    "ResidencyError",
    "RetryExhaustedError",
    "SpecError",
    "did_you_mean",
]


class GeoshardError(Exception):
    """Base class of every error geoshard raises on purpose.

    Attributes:
        category: one of ``config``, ``residency``, ``capacity``, ``input``, ``backend``.
        exit_code: the CLI exit code for this error (2 for config and input, 3 for
            backend, 1 otherwise).
        retryable: True when the same call may succeed if repeated after a backoff;
            :class:`~geoshard.storage.retry.RetryPolicy` retries these and nothing else.
    """

    category: str = "generic"
    exit_code: int = 1
    retryable: bool = False


class ConfigError(GeoshardError):
    """The spec, a flag or a setting is wrong. Fix the input; retrying will not help."""

    category = "config"
    exit_code = 2


class SpecError(ConfigError):
    """A topology spec failed to load or validate.

    Attributes:
        problems: one line per problem, each naming the file, line and key path.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class InputError(GeoshardError):
    """A request carries a bad value (malformed id, NaN embedding, oversized payload).

    Nothing was written.
    """

    category = "input"
    exit_code = 2


class ResidencyError(GeoshardError):
    """Personal data would be stored or processed outside the regions its jurisdiction allows.

    Nothing was written. This is never retried along another path that leaves the
    jurisdiction.
    """

    category = "residency"
    exit_code = 1


class CapacityError(GeoshardError):
    """Not enough healthy capacity to serve the request."""

    category = "capacity"
    exit_code = 1


class NoHealthyReplicaError(CapacityError):
    """Every replica allowed for a key is down; the router refuses to leave the jurisdiction."""


class BackendError(GeoshardError):
    """A backend (Redis, Milvus, PostgreSQL, Parquet files, ...) failed.

    Not retryable as such: the server answered with an error that another attempt will
    not change (bad credentials, a wrong type, a failed migration). The retryable kind is
    :class:`BackendUnavailableError`.
    """

    category = "backend"
    exit_code = 3


class BackendUnavailableError(BackendError):
    """A backend is unreachable for now: connection refused or lost, a timeout, a failover
    or a slot migration in progress. Retryable: the same call may succeed after a backoff.
    """

    retryable = True


class RetryExhaustedError(BackendError):
    """A retryable error persisted past a retry policy's attempts or time budget.

    Not retryable itself: the policy already spent the budget the caller gave it.

    Attributes:
        attempts: attempts made.
        elapsed_s: seconds from the first attempt to giving up.
        last: the last error the operation raised.
    """

    def __init__(
        self, message: str, *, attempts: int, elapsed_s: float, last: BaseException
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        self.last = last


class DurabilityError(BackendError):
    """Fewer replicas than required acknowledged a durable write (Redis ``WAIT``).

    The write *was applied* on the primary and may or may not survive a failover: treat
    it as indeterminate (Jepsen ``info``), never as failed-and-absent. Not retryable: a
    blind retry would hide that the first write may have landed.

    Attributes:
        node: ``host:port`` of the primary.
        acked: replicas that acknowledged within the timeout.
        required: replicas required.
    """

    def __init__(self, message: str, *, node: str, acked: int, required: int) -> None:
        super().__init__(message)
        self.node = node
        self.acked = acked
        self.required = required


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""`` when none is close.

    Examples:
        >>> did_you_mean("eu-wset", ["eu-west", "us-east"])
        "; did you mean 'eu-west'?"
    """
    match = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""
