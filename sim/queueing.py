"""Queueing formulas for the planner: Erlang C, Allen-Cunneen, square-root staffing.

A pool of ``c`` FIFO servers with Poisson arrivals at rate ``lam`` and mean service time
``s`` carries an offered load of ``a = lam x s`` Erlangs (utilisation ``a / c``).

* **M/M/c (exact)**: Erlang C gives the probability of waiting ``P(W > 0) = C(c, a)``;
  the wait of a request that waits is exponential with rate ``c/s - lam``, so
  ``P(W > t) = C(c, a) exp(-(c/s - lam) t)`` and ``E[W] = C(c, a) / (c/s - lam)``.
* **M/G/c (Allen-Cunneen)**: the M/M/c wait scaled by ``(ca^2 + cs^2) / 2``, with
  ``ca^2 = 1`` (Poisson arrivals) and ``cs^2`` the squared coefficient of variation of
  the service time; below ``cs^2 = 1`` the factor interpolates towards Cosmetatos' M/D/c
  correction (:func:`wait_factor`), which Allen-Cunneen's heavy-traffic factor
  overstates at moderate load. ``P(W > 0)`` is kept at Erlang C and the conditional wait
  stays exponential with the scaled mean. Exact for exponential service; an
  approximation otherwise (the planner's accuracy against the simulator is in
  ``docs/planning.md``).
* **Square-root staffing** (Halfin-Whitt; Netflix's service-capacity-modeling sizes cores
  this way): ``c = ceil(a + beta sqrt(a))``, with ``P(wait) -> 1 / (1 + beta Phi(beta) /
  phi(beta))`` as ``a`` grows. Netflix's tiers use beta 2.375, 1.761, 1.16 and 1.0.

Erlang C is computed from the Erlang B recursion ``B(k) = a B(k-1) / (k + a B(k-1))``,
which is stable for thousands of servers (no factorials).

Examples:
    >>> round(erlang_c(8, 6.4), 4)                 # M/M/8, lambda 6.4, mu 1
    0.4576
    >>> sqrt_staffing(1000, 2.375), round(erlang_c(1076, 1000), 4)
    (1076, 0.0103)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from geoshard.errors import ConfigError

__all__ = [
    "NETFLIX_BETAS",
    "WaitModel",
    "erlang_b",
    "erlang_c",
    "halfin_whitt_wait_probability",
    "mgc_wait",
    "servers_for_wait_probability",
    "sqrt_staffing",
    "wait_factor",
]

#: Netflix service-capacity-modeling's square-root staffing beta per tier (0 = critical).
NETFLIX_BETAS: dict[int, float] = {0: 2.375, 1: 1.761, 2: 1.16, 3: 1.0}


def erlang_b(c: int, a: float) -> float:
    """Blocking probability of M/M/c/c with ``c`` servers and offered load ``a`` Erlangs.

    Raises:
        ConfigError: ``c < 1`` or ``a < 0``.
    """
    if c < 1:
        raise ConfigError(f"servers (={c}) must be >= 1")
    if not a >= 0:
        raise ConfigError(f"offered load (={a}) must be >= 0 Erlangs")
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


def erlang_c(c: int, a: float) -> float:
    """``P(W > 0)`` in M/M/c: the probability that an arrival waits (1 when ``a >= c``).

    Raises:
        ConfigError: ``c < 1`` or ``a < 0``.
    """
    if a >= c:
        if c < 1:
            raise ConfigError(f"servers (={c}) must be >= 1")
        return 1.0
    b = erlang_b(c, a)
    rho = a / c
    return b / (1.0 - rho + rho * b)


def sqrt_staffing(a: float, beta: float) -> int:
    """Square-root staffing: ``ceil(a + beta sqrt(a))`` servers for ``a`` Erlangs.

    Raises:
        ConfigError: ``a < 0`` or ``beta < 0``.
    """
    if not a >= 0:
        raise ConfigError(f"offered load (={a}) must be >= 0 Erlangs")
    if not beta >= 0:
        raise ConfigError(f"beta (={beta}) must be >= 0")
    return max(1, math.ceil(a + beta * math.sqrt(a) - 1e-9))


def halfin_whitt_wait_probability(beta: float) -> float:
    """The Halfin-Whitt limit of ``P(wait)`` under square-root staffing with ``beta``."""
    if beta <= 0:
        return 1.0
    phi = math.exp(-beta * beta / 2.0) / math.sqrt(2.0 * math.pi)
    big_phi = 0.5 * (1.0 + math.erf(beta / math.sqrt(2.0)))
    return 1.0 / (1.0 + beta * big_phi / phi)


def servers_for_wait_probability(a: float, p_wait: float) -> int:
    """The fewest servers with Erlang C ``P(W > 0) <= p_wait`` at ``a`` Erlangs.

    Raises:
        ConfigError: ``p_wait`` outside (0, 1] or ``a < 0``.
    """
    if not 0 < p_wait <= 1:
        raise ConfigError(f"p_wait (={p_wait}) must be in (0, 1]")
    c = max(1, math.floor(a) + 1)
    while erlang_c(c, a) > p_wait:
        c += 1
    return c


@dataclass(frozen=True)
class WaitModel:
    """The queueing delay of one pool: an atom at 0, then an exponential tail.

    ``P(W > t) = p_wait x exp(-t / cond_mean_ms)``; ``inf`` means the pool is overloaded
    (offered load >= servers) and has no steady state.

    Attributes:
        servers: ``c``.
        offered: offered load ``a`` in Erlangs.
        p_wait: probability of waiting.
        cond_mean_ms: mean wait of a request that waits.
    """

    servers: int
    offered: float
    p_wait: float
    cond_mean_ms: float

    @property
    def load(self) -> float:
        """Utilisation ``a / c`` (above 1 when overloaded)."""
        return self.offered / self.servers

    @property
    def stable(self) -> bool:
        """True when the pool has a steady state (``a < c``)."""
        return self.offered < self.servers

    @property
    def mean_ms(self) -> float:
        """``E[W]`` in ms."""
        return self.p_wait * self.cond_mean_ms if self.stable else math.inf

    def quantile_ms(self, q: float) -> float:
        """The ``q`` quantile of the wait (zeros included), ms."""
        if not self.stable:
            return math.inf
        tail = 1.0 - q
        if self.p_wait <= tail or self.cond_mean_ms <= 0:
            return 0.0
        return self.cond_mean_ms * math.log(self.p_wait / tail)

    def survival(self, t_ms: float) -> float:
        """``P(W > t)``."""
        if not self.stable:
            return 1.0
        if t_ms < 0:
            return 1.0
        return self.p_wait * math.exp(-t_ms / self.cond_mean_ms) if self.cond_mean_ms > 0 else 0.0


def mgc_wait(
    c: int, lam_per_ms: float, mean_service_ms: float, cs2: float, ca2: float = 1.0
) -> WaitModel:
    """The M/G/c wait by Allen-Cunneen (exact M/M/c when ``cs2 = ca2 = 1``).

    Args:
        c: servers.
        lam_per_ms: arrival rate, per ms.
        mean_service_ms: mean service time, ms.
        cs2: squared coefficient of variation of the service time (see :func:`wait_factor`).
        ca2: squared coefficient of variation of the inter-arrival times (1: Poisson).

    Raises:
        ConfigError: ``c < 1`` or a negative rate or service time.
    """
    if c < 1:
        raise ConfigError(f"servers (={c}) must be >= 1")
    if lam_per_ms < 0 or mean_service_ms < 0:
        raise ConfigError("arrival rate and service time must be >= 0")
    a = lam_per_ms * mean_service_ms
    if a >= c:
        return WaitModel(c, a, 1.0, math.inf)
    if a == 0 or mean_service_ms == 0:
        return WaitModel(c, a, 0.0, 0.0)
    pw = erlang_c(c, a)
    cond = mean_service_ms / (c - a) * wait_factor(c, a / c, cs2, ca2)
    return WaitModel(c, a, pw, cond)


def wait_factor(c: int, rho: float, cs2: float, ca2: float = 1.0) -> float:
    """``E[W(M/G/c)] / E[W(M/M/c)]``.

    Allen-Cunneen's ``(ca2 + cs2) / 2`` is the heavy-traffic limit; for service times less
    variable than exponential (``cs2 < 1``) with Poisson arrivals it overstates the wait at
    moderate load, so there the factor interpolates between M/M/c (1) and Cosmetatos'
    M/D/c approximation, ``1/2 [1 + (1 - rho)(c - 1)(sqrt(4 + 5c) - 2) / (16 rho c)]``,
    linearly in ``cs2`` (Tijms, *A First Course in Stochastic Models*, §5.5).
    """
    if ca2 != 1.0 or cs2 >= 1.0 or rho <= 0:
        return (ca2 + cs2) / 2.0
    md = 0.5 * (1.0 + (1.0 - rho) * (c - 1) * (math.sqrt(4.0 + 5.0 * c) - 2.0) / (16.0 * rho * c))
    return cs2 + (1.0 - cs2) * md
