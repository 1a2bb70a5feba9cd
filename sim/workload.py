"""Workload: Poisson arrivals per region with diurnal and campaign rates, users from the slice.

* :func:`start_of_day` says where in the diurnal cycle simulated time 0 falls: the spec's
  ``workload.start_of_day_s``, or by default the start of the **busiest** step of the
  curve, so a run checks the topology at its peak.
* :func:`rate_segments` gives piecewise-constant per-region rates (``peak_qps x diurnal
  step x campaign multipliers``), cut at extra times (the fault timeline) too.
* :class:`RegionArrivals` draws one region's arrivals chunk by chunk from its own random
  stream: Poisson at the rate of the slice's requests (exact: the exponential gap is
  redrawn at every rate change, which is valid because it is memoryless), each with a
  request type from the mix, a user from :class:`~geoshard.sim.population.Population`
  (and whether it is one of the slice's head users), and a uniform draw for per-request
  choices (the API server). A region's arrivals depend only on its own
  stream, so simulating regions together or apart gives the same requests.

Times here are in milliseconds, the simulator's clock unit.

Examples:
    >>> from geoshard.spec import load_spec
    >>> spec = load_spec("examples/global.yaml")                  # doctest: +SKIP
    >>> start_of_day(spec) / 3600                                 # doctest: +SKIP
    19.0
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoshard.spec import REQUEST_TYPES, Spec

from .population import Population

__all__ = [
    "Chunk",
    "RegionArrivals",
    "expected_requests",
    "rate_segments",
    "shifted",
    "start_of_day",
]


def start_of_day(spec: Spec) -> float:
    """Seconds into the diurnal cycle at which simulated time 0 falls.

    The spec's ``workload.start_of_day_s`` when set; else the start of the first step
    with the highest multiplier (the peak), so that a run checks the busiest hour.
    """
    w = spec.workload
    if w.start_of_day_s is not None:
        return float(w.start_of_day_s)
    peak = max(range(len(w.diurnal)), key=lambda i: (w.diurnal[i], -i))
    return peak * w.day_s / len(w.diurnal)


def rate_segments(
    spec: Spec,
    duration_ms: float,
    cuts: Iterable[float] = (),
) -> list[tuple[float, float, dict[str, float]]]:
    """Piecewise-constant per-region rates: ``[(start_ms, end_ms, {region: req/ms})]``.

    Segments change at every diurnal step, campaign start and end, and at ``cuts``.
    """
    w = spec.workload
    day_ms = w.day_s * 1000.0
    step = day_ms / len(w.diurnal)
    t0 = start_of_day(spec) * 1000.0
    edges = {0.0, duration_ms}
    k = int(t0 // step) + 1
    while k * step - t0 < duration_ms:
        edges.add(k * step - t0)
        k += 1
    for c in w.campaigns:
        for t in (c.start_s * 1000.0, (c.start_s + c.duration_s) * 1000.0):
            if 0 < t < duration_ms:
                edges.add(t)
    edges.update(t for t in cuts if 0 < t < duration_ms)
    bounds = sorted(edges)
    segs = []
    for a, b in itertools.pairwise(bounds):
        mid = (a + b) / 2
        diurnal = w.diurnal[int(((mid + t0) % day_ms) // step) % len(w.diurnal)]
        rates = {}
        for r in spec.regions:
            q = w.peak_qps.get(r, 0.0) * diurnal
            for c in w.campaigns:
                if c.start_s * 1000.0 <= mid < (c.start_s + c.duration_s) * 1000.0 and (
                    c.regions is None or r in c.regions
                ):
                    q *= c.multiplier
            rates[r] = q / 1000.0
        segs.append((a, b, rates))
    return segs


def expected_requests(
    spec: Spec, duration_s: float, scale: float, regions: Iterable[str] | None = None
) -> float:
    """Expected simulated requests of a run: the rates of :func:`rate_segments` over the
    duration, times ``scale`` (the slice); of the clients of ``regions`` only if given."""
    keep = set(spec.regions if regions is None else regions)
    total = 0.0
    for a, b, rates in rate_segments(spec, duration_s * 1000.0):
        total += (b - a) * sum(q for r, q in rates.items() if r in keep)
    return total * scale


def shifted(spec: Spec, offset_s: float) -> Spec:
    """The spec whose time 0 is ``offset_s`` into a run of ``spec`` (before it when
    negative): the diurnal clock, the campaigns and the faults move with it. A campaign
    or fault over before the new time 0 is dropped; one under way is cut to what is left.
    """
    w = spec.workload

    def moved(items: list[Any], start_field: str) -> list[Any]:
        out = []
        for x in items:
            start = getattr(x, start_field) - offset_s
            end = start + x.duration_s
            if end <= 0:
                continue
            out.append(
                x.model_copy(
                    update={start_field: max(start, 0.0), "duration_s": end - max(start, 0.0)}
                )
            )
        return out

    sod = (start_of_day(spec) + offset_s) % w.day_s
    work = w.model_copy(
        update={"start_of_day_s": sod, "campaigns": moved(list(w.campaigns), "start_s")}
    )
    faults = spec.faults.model_copy(update={"events": moved(list(spec.faults.events), "at_s")})
    return spec.model_copy(update={"workload": work, "faults": faults})


@dataclass
class Chunk:
    """One region's arrivals in ``[start_ms, end_ms)``, as NumPy arrays.

    Attributes:
        start_ms, end_ms: the span the chunk covers (the next chunk starts at ``end_ms``).
        t_ms: arrival times, increasing.
        rtype: request type index (into ``REQUEST_TYPES``).
        user: global user id.
        rank: the user's popularity rank in its jurisdiction (0 = most popular).
        head: True for a request of a head user (see :mod:`geoshard.sim.population`).
        draw: a uniform integer for per-request choices (API server, ...).
    """

    start_ms: float
    end_ms: float
    t_ms: np.ndarray
    rtype: np.ndarray
    user: np.ndarray
    rank: np.ndarray
    head: np.ndarray
    draw: np.ndarray


class RegionArrivals:
    """One region's clients: arrivals chunk by chunk, from the region's own stream.

    Args:
        region: the client region.
        population: the users of the region's jurisdiction (with the slice).
        segments: :func:`rate_segments` of the run.
        mix: request type shares, in ``REQUEST_TYPES`` order.
        rng: this region's generator.
    """

    def __init__(
        self,
        region: str,
        population: Population,
        segments: list[tuple[float, float, dict[str, float]]],
        mix: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        self.region = region
        self.population = population
        share = population.sampled_share
        self._segs = [(a, b, rates.get(region, 0.0) * share) for a, b, rates in segments]
        self._mix_cdf = np.cumsum(mix / mix.sum())
        self._rng = rng
        self._seg = 0
        self.t = 0.0

    @property
    def done(self) -> bool:
        """True when every arrival has been drawn."""
        return self._seg >= len(self._segs)

    def next_chunk(self, max_n: int = 4096) -> Chunk:
        """Draw the arrivals from the current time on: at most ``max_n``, within one segment."""
        _a, b, lam = self._segs[self._seg]
        start = self.t
        rng = self._rng
        if lam <= 0.0:
            self._seg += 1
            self.t = b
            empty = np.empty(0)
            ints = empty.astype(np.int64)
            return Chunk(start, b, empty, ints, ints, ints, empty.astype(bool), ints)
        times = start + np.cumsum(rng.exponential(1.0 / lam, max_n))
        keep = times < b
        if keep.all():
            end = float(times[-1])
            self.t = end
        else:
            times = times[keep]
            end = b
            self._seg += 1
            self.t = b
        n = len(times)
        pop = self.population
        rtype = np.searchsorted(self._mix_cdf, rng.random(n), side="right")
        np.minimum(rtype, len(self._mix_cdf) - 1, out=rtype)
        user, is_head, rank = pop.draw(rng, n)
        draw = rng.integers(0, 1 << 30, n)
        # the chunk ends just after its last arrival (the next one starts from there: the
        # Poisson process is memoryless) or at the segment's end
        return Chunk(start, end, times, rtype.astype(np.int64), user, rank, is_head, draw)


def mix_vector(spec: Spec) -> np.ndarray:
    """The request mix as a vector in ``REQUEST_TYPES`` order."""
    return np.array([spec.workload.mix.get(t, 0.0) for t in REQUEST_TYPES], dtype=np.float64)
