"""Independent parts of a topology, simulated one after another or in parallel on Ray.

Residency splits most global topologies into parts that never exchange a request: an EU
user's requests enter, are cached, stored and replicated only in the regions EU rules
allow. :func:`components` finds these parts (regions linked by any jurisdiction whose
clients, storage or processing span them). Every random stream of the engine is keyed
by the name of what draws from it (:func:`geoshard.sim.engine.stream`), so a part
simulated alone makes exactly the draws it makes in a joint run, and
:func:`simulate_parts` gives the same results serially or on Ray (a test checks it).

**Time segments.** A large part of a fault-free, warm-started run is also cut in time:
segment ``k`` of ``[b_k, b_k+1)`` is simulated on its own, from caches at their steady
state (the warm start) and from empty queues filled during ``LEAD_S`` unmeasured
seconds before ``b_k`` (a queue at 90 % load forgets its start in well under a second),
with random streams of its own and the run's population. The segments' measurements
are placed on the run's clock and merged (:func:`~geoshard.sim.collect.shift_results`).
How a run is cut depends only on the spec, the duration and the scale, never on the
number of workers, so serial and parallel runs give the same results. What a segment
cannot carry over is a queue that grows for the whole run: a pool above 100 % offered
load has its queue restart at each segment, so its waits are understated; such a run
fails its capacity gate anyway (the ceiling is below 100 %). Runs with faults or a cold
start are never cut.

Ray is the project's engine for parallel work: :func:`simulate_parts` runs the tasks
(parts and segments, longest first, at most ``workers`` at once, each in a fresh worker
process so that its memory is returned when it ends) on a local Ray (or the cluster at
``ray_address``) when there are several tasks and enough work to repay Ray's start-up.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from geoshard.regions.residency import ResidencyPolicy
from geoshard.spec import PERSONAL_CLASSES, Spec

from .collect import SimResults, merge_results, shift_results
from .engine import EngineOptions, Simulation
from .tasks import init_ray
from .workload import expected_requests, shifted

__all__ = ["Task", "components", "plan_tasks", "simulate_parts", "slice_lead_s"]

#: below this many requests simulated in full, Ray's start-up (~5 s) is not repaid.
RAY_MIN_REQUESTS = 3_000_000
#: a part expected to simulate more requests than this is cut in time segments ...
SEGMENT_REQUESTS = 6_000_000
#: ... of at least this many simulated seconds
MIN_SEGMENT_S = 10
#: unmeasured seconds a later segment simulates first, so that its queues fill
LEAD_S = 1


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


@dataclass(frozen=True)
class Task:
    """One independent piece of a run: a part, over a span of the run's time.

    Attributes:
        part: its regions. ``part_index``: the part's place in :func:`components`.
        segment: 0 for the span that starts the run, k > 0 for a later one.
        start_s, end_s: the span of the run's arrivals it measures.
        lead_s: unmeasured seconds simulated before ``start_s``.
        expected: the requests it is expected to simulate (for scheduling).
    """

    part: tuple[str, ...]
    part_index: int
    segment: int
    start_s: float
    end_s: float
    lead_s: float
    expected: float

    @property
    def offset_s(self) -> float:
        """The run's time at the task's time 0."""
        return self.start_s - self.lead_s


def slice_lead_s(spec: Spec, scale: float, duration_s: float) -> int:
    """Unmeasured seconds a slice simulates before the run's time 0.

    In a slice the API pool runs in slow motion and a recommend's second API visit joins
    after its gap since the first one, dilated by ``1 / R`` (see
    :mod:`geoshard.sim.pools`): up to the recommend's budget before precision, divided by
    ``R``. The second visits of requests that arrived before time 0 are part of the
    steady state at time 0; without them the first ``lag`` seconds of the run miss up to
    a quarter of the API load. When that lag is more than 1 % of the run, the slice
    starts that long before time 0 (the lead-in costs ``budget x full-scale rate``
    requests, whatever ``R``); below, the missing visits weigh less than the sampling
    error, and a slice and a full run stay time-dilated copies of each other (the same
    random draws). At ``R = 1`` there is no lag.
    """
    rec = spec.slo.latency.get("recommend")
    if scale >= 1.0 or rec is None or not spec.workload.mix.get("recommend"):
        return 0
    budgets = spec.slo.stage_budgets
    gap_ms = rec.p99_ms * sum(budgets.get(s, 1.0) for s in ("sourcing", "recall", "integrity"))
    lag = gap_ms / 1000.0 * (1.0 / scale - 1.0)
    return math.ceil(lag) if lag > 0.01 * duration_s else 0


def plan_tasks(
    spec: Spec,
    duration_s: float,
    warmup_s: float,
    scale: float,
    options: EngineOptions | None = None,
) -> list[Task]:
    """The tasks of a run: each part, cut in time segments when it is large, fault-free
    and warm-started (see the module text); in part order, then time order. Every task
    starts with an unmeasured lead-in: a slice's (:func:`slice_lead_s`), and at least
    ``LEAD_S`` for a later segment."""
    options = options or EngineOptions()
    cuttable = options.warm_start and not spec.faults.events
    lag = slice_lead_s(spec, scale, duration_s)
    tasks = []
    for pi, part in enumerate(components(spec)):
        exp = expected_requests(spec, duration_s, scale, part)
        n = 1
        if cuttable:
            n = max(1, min(math.ceil(exp / SEGMENT_REQUESTS), int(duration_s // MIN_SEGMENT_S)))
        bounds = [float(int(duration_s * k / n)) for k in range(n)] + [duration_s]
        if n > 1 and warmup_s >= bounds[1]:
            n, bounds = 1, [0.0, duration_s]
        for k in range(n):
            a, b = bounds[k], bounds[k + 1]
            lead = float(max(LEAD_S, lag) if k else lag)
            tasks.append(Task(tuple(part), pi, k, a, b, lead, exp * (b - a + lead) / duration_s))
    return tasks


def _run_task(
    spec: Spec,
    seed: int,
    task: Task,
    warmup_s: float,
    scale: float,
    options: EngineOptions | None,
    duration_s: float,
    on_second: Callable[[int], None] | None = None,
) -> SimResults:
    """Simulate one task and place its results on the run's clock."""
    off = task.offset_s
    sim = Simulation(
        shifted(spec, off) if off else spec,
        seed,
        task.end_s - off,
        task.lead_s + (0.0 if task.segment else warmup_s),
        scale,
        options,
        regions=set(task.part),
        segment=task.segment,
        lead_s=task.lead_s,
    )
    res = sim.run(on_second)
    timeout_s = (options or EngineOptions()).timeout_ms / 1000.0
    return shift_results(
        res,
        int(off),
        int(task.lead_s),
        max(1, math.ceil(duration_s)),
        max(1, math.ceil(duration_s + 10 * timeout_s)) + 1,
    )


def _task_seconds(task: Task) -> int:
    return max(1, int(task.end_s - task.offset_s))


def simulate_parts(
    spec: Spec,
    seed: int,
    duration_s: float,
    warmup_s: float,
    scale: float,
    options: EngineOptions | None = None,
    workers: int = 0,
    ray_address: str | None = None,
    on_progress: Callable[[float], None] | None = None,
    expected_requests: float = 0.0,
) -> tuple[SimResults, dict[str, Any]]:
    """Simulate every part (and time segment, :func:`plan_tasks`) of ``spec`` and merge.

    Args:
        spec, seed, duration_s, warmup_s, scale, options: as for
            :class:`~geoshard.sim.engine.Simulation`.
        workers: 1 runs the tasks one after another in this process; N > 1 runs them
            as Ray tasks, N at once; 0 chooses (Ray when there are several tasks, Ray is
            installed and ``expected_requests`` repays its start-up).
        ray_address: an existing Ray cluster to run on (implies Ray).
        on_progress: called with the fraction of simulated time done (0..1).
        expected_requests: the requests the run will simulate in full (for ``workers=0``).

    Returns:
        The merged results, and how the run was executed (``parts``, ``segments`` per
        part, ``executor``, ``workers``).
    """
    tasks = plan_tasks(spec, duration_s, warmup_s, scale, options)
    parts = components(spec)
    if workers == 0:
        workers = 1
        if ray_address or (
            len(tasks) > 1 and expected_requests >= RAY_MIN_REQUESTS and _ray_available()
        ):
            workers = min(len(tasks), os.cpu_count() or 1)
    use_ray = ray_address is not None or (workers > 1 and len(tasks) > 1)
    total = sum(_task_seconds(t) for t in tasks)
    info = {
        "parts": [list(p) for p in parts],
        "segments": [sum(1 for t in tasks if t.part_index == i) for i in range(len(parts))],
        "executor": "ray" if use_ray else "serial",
        "workers": workers if use_ray else 1,
    }
    if not use_ray:
        results = []
        base = 0
        for task in tasks:
            cb = None
            if on_progress is not None:
                cb = (lambda b: lambda s: on_progress((b + s) / total))(base)
            results.append(_run_task(spec, seed, task, warmup_s, scale, options, duration_s, cb))
            base += _task_seconds(task)
        return merge_results(results), info
    return _ray(
        spec,
        seed,
        duration_s,
        warmup_s,
        scale,
        options,
        tasks,
        workers,
        ray_address,
        on_progress,
        total,
    ), info


def _ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _ray(
    spec: Spec,
    seed: int,
    duration_s: float,
    warmup_s: float,
    scale: float,
    options: EngineOptions | None,
    tasks: list[Task],
    workers: int,
    address: str | None,
    on_progress: Callable[[float], None] | None,
    total: int,
) -> SimResults:
    import ray
    from ray.util.queue import Empty, Queue

    started = False
    if not ray.is_initialized():
        init_ray(address, workers)
        started = True
    try:
        queue = Queue()

        # a fresh worker process per task: a finished task's caches go back to the OS
        @ray.remote(num_cpus=1, max_calls=1)
        def run(k: int) -> SimResults:
            return _run_task(
                spec,
                seed,
                tasks[k],
                warmup_s,
                scale,
                options,
                duration_s,
                lambda s: queue.put_nowait((k, s)),
            )

        order = sorted(range(len(tasks)), key=lambda k: -tasks[k].expected)  # longest first
        futures: dict[Any, int] = {}
        results: dict[int, SimResults] = {}
        done: dict[int, int] = {}
        while order or futures:
            while order and len(futures) < workers:
                k = order.pop(0)
                futures[run.remote(k)] = k
            ready, _ = ray.wait(list(futures), num_returns=1, timeout=0.5)
            for ref in ready:
                k = futures.pop(ref)
                results[k] = ray.get(ref)
                done[k] = _task_seconds(tasks[k])
            try:
                while True:
                    k, s = queue.get_nowait()
                    if k not in results:
                        done[k] = max(done.get(k, 0), s)
            except Empty:
                pass
            if on_progress is not None:
                on_progress(sum(done.values()) / total)
        queue.shutdown()
    finally:
        if started:
            ray.shutdown()
    return merge_results([results[k] for k in range(len(tasks))])
