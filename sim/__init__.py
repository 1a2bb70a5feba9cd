"""geoshard.sim: the discrete-event simulator of the whole topology.

The simulator calls the same request planner, residency policy, cache policies and cache
walk as the real deployment and replaces only time and I/O (see ``docs/simulator.md``).

- :mod:`.population`: users, Zipf popularity and the faithful slice of a scaled run.
- :mod:`.workload`: Poisson arrivals per region (diurnal start, campaigns), in chunks.
- :mod:`.faults`: the fault schedule as a timeline of real and believed health.
- :mod:`.dists`: batched service-time samplers.
- :mod:`.pools`: FIFO server pools with time stretch and deferred joins.
- :mod:`.warm`: the warm start (steady-state caches, drawn lazily per key).
- :mod:`.simpy_adapter`: the one place that touches SimPy's private state.
- :mod:`.engine`: :class:`Simulation`, the request state machine on SimPy's heap.
- :mod:`.collect`: metrics collection into a mergeable :class:`SimResults`.
- :mod:`.parallel`: independent parts of a topology, serially or on Ray.
- :mod:`.verdict`: the honest SLO, capacity and residency verdict.
- :mod:`.run`: :func:`simulate_spec` -> result.json object and time series; :func:`write_run`.
- :mod:`.metrics`, :mod:`.report`: histograms; CSV, PNG and report.html.

The planner (``geoshard plan``, ``docs/planning.md``):

- :mod:`.queueing`: Erlang C, Allen-Cunneen, square-root staffing.
- :mod:`.delays`: delay distributions on a grid (sums, mixtures, stage budgets).
- :mod:`.ringload`: each hot node's share of the keys, from the real ring.
- :mod:`.scenarios`: normal, region loss, n-1 and campaign scenarios, for model and simulator.
- :mod:`.analytic`: the analytic model of a spec (load, caches, queueing, latency).
- :mod:`.search`: the ``--search`` grammar; :mod:`.planner`: screen, confirm, tighten.
- :mod:`.tasks`: independent tasks serially or on Ray; :mod:`.specedit`, :mod:`.plan_report`:
  the planned spec, its diff and the plan directory; :mod:`.modelcheck`: model vs simulator.
"""

from __future__ import annotations

from .collect import SimResults
from .engine import EngineOptions, Simulation
from .run import SCHEMA_VERSION, cost_per_hour, simulate_spec, write_run

__all__ = [
    "SCHEMA_VERSION",
    "EngineOptions",
    "SimResults",
    "Simulation",
    "cost_per_hour",
    "simulate_spec",
    "write_run",
]
