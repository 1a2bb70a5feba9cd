"""Independent parts of a topology, simulated one after another or in parallel on Ray.

Residency splits most global topologies into parts that never exchange a request: an EU
user's requests enter, are cached, stored and replicated only in the regions EU rules
allow. :func:`components` finds these parts (regions linked by any jurisdiction whose
clients, storage or processing span them). Every random stream of the engine is keyed
by the name of what draws from it (:func:`geoshard.sim.engine.stream`), so a part
simulated alone makes exactly the draws it makes in a joint run, and
:func:`simulate_parts` gives the same results serially or on Ray (a test checks it).

Ray is the project's engine for parallel work: :func:`simulate_parts` runs the parts as
Ray tasks on a local Ray (or the cluster at ``ray_address``) when there are several
parts and enough work to repay Ray's start-up; a part's memory is freed when it ends.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import PERSONAL_CLASSES, Spec

from .collect import SimResults, merge_results
from .engine import EngineOptions, Simulation

__all__ = ["components", "simulate_parts"]

#: below this many requests simulated in full, Ray's start-up (~5 s) is not repaid.
RAY_MIN_REQUESTS = 3_000_000


def components(spec: Spec) -> list[list[str]]:
    """The parts of a topology that never exchange a request, each a list of regions.

    Regions are linked when one jurisdiction's clients, stored data or processing may
    touch both. Parts are in spec order of their first region.
    """
    parent = {r: r for r in spec.regions}

    def find(r: str) -> str:
        while parent[r] != r:
            parent[r] = parent[parent[r]]
            r = parent[r]
        return r

    pol = ResidencyPolicy.from_spec(spec)
    for j in spec.jurisdictions:
        linked = set(spec.jurisdiction_regions(j))
        for dc in PERSONAL_CLASSES:
            linked |= pol.allowed_regions(j, dc, "store")
            linked |= pol.allowed_regions(j, dc, "process")
        first, *rest = sorted(linked)
        for r in rest:
            parent[find(r)] = find(first)
    groups: dict[str, list[str]] = {}
    for r in spec.regions:
        groups.setdefault(find(r), []).append(r)
    return sorted(groups.values(), key=lambda g: list(spec.regions).index(g[0]))


def _run_part(spec: Spec, seed: int, duration_s: float, warmup_s: float, scale: float,
              options: EngineOptions | None, part: list[str],
              on_second: Callable[[int], None] | None = None) -> SimResults:
    sim = Simulation(spec, seed, duration_s, warmup_s, scale, options, regions=set(part))
    return sim.run(on_second)


def simulate_parts(spec: Spec, seed: int, duration_s: float, warmup_s: float, scale: float,
                   options: EngineOptions | None = None, workers: int = 0,
                   ray_address: str | None = None,
                   on_progress: Callable[[float], None] | None = None,
                   expected_requests: float = 0.0) -> tuple[SimResults, dict[str, Any]]:
    """Simulate every part of ``spec`` and merge the results.

    Args:
        spec, seed, duration_s, warmup_s, scale, options: as for
            :class:`~geoshard.sim.engine.Simulation`.
        workers: 1 runs the parts one after another in this process; N > 1 runs them
            as Ray tasks on N CPUs; 0 chooses (Ray when there are several parts, Ray is
            installed and ``expected_requests`` repays its start-up).
        ray_address: an existing Ray cluster to run on (implies Ray).
        on_progress: called with the fraction of simulated time done (0..1).
        expected_requests: the requests the run will simulate in full (for ``workers=0``).

    Returns:
        The merged results, and how the run was executed (``parts``, ``executor``,
        ``workers``).
    """
    parts = components(spec)
    if workers == 0:
        workers = 1
        if ray_address or (len(parts) > 1 and expected_requests >= RAY_MIN_REQUESTS
                           and _ray_available()):
            workers = min(len(parts), os.cpu_count() or 1)
    use_ray = ray_address is not None or (workers > 1 and len(parts) > 1)
    total = max(1, len(parts) * max(1, int(duration_s)))
    info = {"parts": [list(p) for p in parts], "executor": "ray" if use_ray else "serial",
            "workers": workers if use_ray else 1}
    if not use_ray:
        results = []
        for k, part in enumerate(parts):
            base = k * max(1, int(duration_s))
            cb = None
            if on_progress is not None:
                cb = (lambda b: (lambda s: on_progress((b + s) / total)))(base)  # type: ignore[misc]
            results.append(_run_part(spec, seed, duration_s, warmup_s, scale, options, part, cb))
        return merge_results(results), info
    return _ray(spec, seed, duration_s, warmup_s, scale, options, parts, workers, ray_address,
                on_progress, total), info


def _ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _ray(spec: Spec, seed: int, duration_s: float, warmup_s: float, scale: float,
         options: EngineOptions | None, parts: list[list[str]], workers: int,
         address: str | None, on_progress: Callable[[float], None] | None,
         total: int) -> SimResults:
    import ray
    from ray.util.queue import Empty, Queue

    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=workers, **kw)
        started = True
    try:
        queue = Queue()

        @ray.remote(num_cpus=1)
        def run(part: list[str], k: int) -> SimResults:
            return _run_part(spec, seed, duration_s, warmup_s, scale, options, part,
                             lambda s: queue.put_nowait((k, s)))

        futures = [run.remote(part, k) for k, part in enumerate(parts)]
        done: dict[int, int] = {}
        pending = list(futures)
        while pending:
            ready, pending = ray.wait(pending, timeout=0.5)
            try:
                while True:
                    k, s = queue.get_nowait()
                    done[k] = max(done.get(k, 0), s)
            except Empty:
                pass
            if on_progress is not None:
                on_progress(sum(done.values()) / total)
        results = ray.get(futures)
        queue.shutdown()
    finally:
        if started:
            ray.shutdown()
    return merge_results(results)
