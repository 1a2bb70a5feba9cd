"""geoshard.sim: the discrete-event simulator of the whole topology.

The simulator calls the same Router, residency policy and cache policies as the real
deployment and replaces only time and I/O (see ``docs/simulator.md``).

- :mod:`.workload`: Zipf keys, Poisson arrivals (diurnal, campaigns), :func:`scale_spec`.
- :mod:`.dists`: batched service-time samplers.
- :mod:`.metrics`: streaming log-bucketed histograms (relative error <= 0.5 %).
- :mod:`.engine`: :class:`Simulation`, the SimPy model (queues, caches, faults, audit).
- :mod:`.run`: :func:`simulate_spec` -> result.json object and time series; :func:`write_run`.
"""

from __future__ import annotations

from .engine import EngineOptions, Simulation
from .run import SCHEMA_VERSION, cost_per_hour, simulate_spec, write_run
from .workload import ArrivalStream, ZipfKeys, scale_spec

__all__ = [
    "SCHEMA_VERSION",
    "ArrivalStream",
    "EngineOptions",
    "Simulation",
    "ZipfKeys",
    "cost_per_hour",
    "scale_spec",
    "simulate_spec",
    "write_run",
]
