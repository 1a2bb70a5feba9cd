"""The engine's knobs that are not in the spec (:class:`EngineOptions`).

A module of its own, outside the compiled ones (:mod:`geoshard.native`): the options
travel to Ray workers by pickle, and a frozen dataclass compiled by mypyc cannot be
unpickled (its state is restored through the frozen ``__setattr__``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EngineOptions"]


@dataclass(frozen=True)
class EngineOptions:
    """Knobs of the engine that are not in the spec.

    Attributes:
        spill_queue_factor: spill when the API queue is longer than this x its workers.
        shed_queue: shed when no region has room and the queue is longer than this.
        timeout_ms: how long a client waits on a dead hop before the request fails.
        integrity_ms: the integrity stage's constant cost.
        warm_start: start the caches at their steady state (:mod:`geoshard.sim.warm`).
        calibrate: correct the steady-state model with a keyed replay first
            (:mod:`geoshard.sim.calibrate`).
        calibration_requests: the replay's budget (0: twice the run's requests, between
            100,000 and 1,000,000).
        chunk: arrivals drawn per chunk.
    """

    spill_queue_factor: float = 4.0
    shed_queue: int = 4096
    timeout_ms: float = 1000.0
    integrity_ms: float = 1.0
    warm_start: bool = True
    calibrate: bool = True
    calibration_requests: int = 0
    chunk: int = 4096
