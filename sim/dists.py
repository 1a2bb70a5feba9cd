"""Service-time samplers: spec distributions drawn in NumPy batches.

A :class:`Sampler` turns one of the spec's service-time distributions into a zero-argument
callable returning milliseconds. Draws come from a NumPy generator in batches (the
per-call cost is one ``list.pop``), so the simulator's hot path never calls the RNG.

Examples:
    >>> import numpy as np
    >>> from geoshard.spec import ConstantDist
    >>> Sampler(ConstantDist(ms=2.0), np.random.default_rng(0))()
    2.0
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from geoshard.spec import ConstantDist, ExponentialDist, GammaDist, LognormalDist

__all__ = ["Dist", "Sampler", "mean_ms"]

Dist = ExponentialDist | ConstantDist | LognormalDist | GammaDist


def mean_ms(dist: Dist) -> float:
    """The mean of a service-time distribution, in milliseconds."""
    return dist.ms if isinstance(dist, ConstantDist) else dist.mean_ms


class Sampler:
    """Draws service times (ms) from a spec distribution, in batches.

    Args:
        dist: the spec distribution (exponential, constant, lognormal(mean, sigma),
            gamma(mean, cv)).
        rng: the NumPy generator this sampler owns (give each sampler its own stream so
            the draws of one resource do not depend on the traffic of another).
        batch: draws per refill.
        offset_ms: a constant added to every draw (a fixed network hop before the service).

    Attributes:
        constant: the value when the distribution is constant, else ``None`` (callers
            skip zero-length delays).
    """

    __slots__ = ("_batch", "_buf", "_dist", "_offset", "_pop", "_rng", "constant")

    def __init__(
        self, dist: Dist, rng: np.random.Generator, batch: int = 4096, offset_ms: float = 0.0
    ) -> None:
        self._dist = dist
        self._rng = rng
        self._batch = batch
        self._buf: list[float] = []
        self._pop = self._buf.pop
        self._offset = offset_ms
        self.constant: float | None = (
            float(dist.ms) + offset_ms if isinstance(dist, ConstantDist) else None
        )

    def _draw(self, n: int) -> np.ndarray:
        d, rng = self._dist, self._rng
        if isinstance(d, ExponentialDist):
            return rng.exponential(d.mean_ms, n)
        if isinstance(d, LognormalDist):
            # E[X] = exp(mu + sigma^2/2)  =>  mu = ln(mean) - sigma^2/2
            mu = math.log(d.mean_ms) - d.sigma * d.sigma / 2.0
            return rng.lognormal(mu, d.sigma, n)
        if isinstance(d, GammaDist):
            shape = 1.0 / (d.cv * d.cv)
            return rng.gamma(shape, d.mean_ms / shape, n)
        return np.full(n, float(d.ms))

    def draw_function(self) -> Any:
        """The buffer's ``pop``: one draw per call, raising IndexError when empty (then
        call :meth:`refill`). For hot loops that avoid a Python call per draw."""
        return self._pop

    def refill(self) -> None:
        """Draw the next batch into the buffer."""
        self._refill()

    def _refill(self) -> None:
        x = self._draw(self._batch)
        if self._offset:
            x = x + self._offset
        self._buf.extend(x.tolist())

    def __call__(self) -> float:
        """One draw, in milliseconds."""
        if self.constant is not None:
            return self.constant
        try:
            return self._pop()
        except IndexError:
            self._refill()
            return self._pop()
