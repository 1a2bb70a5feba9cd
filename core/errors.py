"""The geoshard error taxonomy.

Every error geoshard raises on purpose derives from :class:`GeoshardError` and carries a
``category`` that retry logic and the CLI branch on (the redis-py model): ``config``
(the spec or the arguments are wrong; exit code 2), ``residency`` (a datum would leave
the regions its jurisdiction allows), ``capacity`` (no healthy replica, overload),
``input`` (a bad id, embedding or payload) and ``backend`` (a server is unreachable;
exit code 3).

A message says what was wrong, with the value, and what to do about it::

    region 'eu-wset' is not in the spec; did you mean 'eu-west'?
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BackendError",
    "CapacityError",
    "ConfigError",
    "GeoshardError",
    "InputError",
    "NoHealthyReplicaError",
    "ResidencyError",
    "SpecError",
    "did_you_mean",
]


class GeoshardError(Exception):
    """Base class of every error geoshard raises on purpose.

    Attributes:
        category: one of ``config``, ``residency``, ``capacity``, ``input``, ``backend``.
        exit_code: the CLI exit code for this error (2 for config and input, 3 for
            backend, 1 otherwise).
    """

    category: str = "generic"
    exit_code: int = 1


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
    """A backend (Redis, Milvus, PostgreSQL, ...) is unreachable or failed."""

    category = "backend"
    exit_code = 3


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""`` when none is close.

    Examples:
        >>> did_you_mean("eu-wset", ["eu-west", "us-east"])
        "; did you mean 'eu-west'?"
    """
    match = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""
