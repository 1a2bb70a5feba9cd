"""The fault schedule as a timeline of what is really broken and what the router believes.

A spec's faults (``node_crash``, ``region_outage``, ``partition``, ``latency_spike``) change
the *real* state at ``at_s`` and back at ``at_s + duration_s``; the router learns each
change ``detection_delay_s`` later (a latency spike is never routed around). Both states
are piecewise constant, so the whole schedule is known before the run:
:class:`Timeline` lists the change times and the states between them. The engine cuts
arrival batches at these times, so a batch is planned under one state.

Examples:
    >>> from geoshard.spec import load_spec
    >>> tl = Timeline.from_spec(load_spec("examples/global.yaml"))  # doctest: +SKIP
    >>> tl.known_at(26_000).down_regions                             # doctest: +SKIP
    frozenset({'eu-west'})
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from geoshard.cluster.routing import Health
from geoshard.spec import Fault, Spec

__all__ = ["RealState", "Timeline"]


@dataclass(frozen=True)
class RealState:
    """What is really down, cut or slow during an interval.

    Attributes:
        health: dead nodes and regions, and partitions, as a :class:`Health`.
        spike_ms: extra one-way-and-back latency per region (latency spikes).
        outages_starting: regions whose outage starts at this interval's start (their
            processes and caches are lost).
    """

    health: Health = field(default_factory=Health)
    spike_ms: tuple[tuple[str, float], ...] = ()
    outages_starting: tuple[str, ...] = ()

    def spike(self) -> dict[str, float]:
        """``spike_ms`` as a dict (empty when nothing is slow)."""
        return dict(self.spike_ms)


def _health(faults: list[Fault]) -> Health:
    return Health(
        frozenset(f.target for f in faults if f.kind == "node_crash" and f.target),
        frozenset(f.target for f in faults if f.kind == "region_outage" and f.target),
        frozenset(frozenset(f.between) for f in faults if f.kind == "partition" and f.between),
    )


@dataclass(frozen=True)
class Timeline:
    """Change times (ms) and the real and known states from each one on.

    Attributes:
        times: increasing change times, starting with 0.
        real: the real state from ``times[i]`` on.
        known: what the router believes from ``times[i]`` on.
    """

    times: tuple[float, ...]
    real: tuple[RealState, ...]
    known: tuple[Health, ...]

    @classmethod
    def from_spec(cls, spec: Spec) -> Timeline:
        """Build the timeline of a spec's fault schedule."""
        det = spec.faults.detection_delay_s * 1000.0
        events = spec.faults.events
        cuts = {0.0}
        for f in events:
            a, b = f.at_s * 1000.0, (f.at_s + f.duration_s) * 1000.0
            cuts.update((a, b))
            if f.kind != "latency_spike":
                cuts.update((a + det, b + det))
        times = tuple(sorted(cuts))
        real, known = [], []
        for t in times:
            active = [f for f in events if f.at_s * 1000.0 <= t < (f.at_s + f.duration_s) * 1000.0]
            seen = [
                f
                for f in events
                if f.kind != "latency_spike"
                and f.at_s * 1000.0 + det <= t < (f.at_s + f.duration_s) * 1000.0 + det
            ]
            spike: dict[str, float] = {}
            for f in active:
                if f.kind == "latency_spike" and f.target:
                    spike[f.target] = spike.get(f.target, 0.0) + f.extra_ms
            starting = tuple(
                sorted(
                    f.target
                    for f in events
                    if f.kind == "region_outage" and f.target and f.at_s * 1000.0 == t
                )
            )
            real.append(RealState(_health(active), tuple(sorted(spike.items())), starting))
            known.append(_health(seen))
        return cls(times, tuple(real), tuple(known))

    def index_at(self, t_ms: float) -> int:
        """The interval that holds time ``t_ms``."""
        return bisect.bisect_right(self.times, t_ms) - 1

    def real_at(self, t_ms: float) -> RealState:
        """The real state at ``t_ms``."""
        return self.real[self.index_at(t_ms)]

    def known_at(self, t_ms: float) -> Health:
        """What the router believes at ``t_ms``."""
        return self.known[self.index_at(t_ms)]

    def next_change(self, t_ms: float) -> float:
        """The first change time after ``t_ms`` (``inf`` when none)."""
        i = bisect.bisect_right(self.times, t_ms)
        return self.times[i] if i < len(self.times) else float("inf")
