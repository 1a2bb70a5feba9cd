"""Independent tasks, one after another or on Ray, with the same answers in the same order.

The planner's screen and confirmation are lists of independent calls of a module-level
function (pure functions of their arguments: specs travel as JSON, every random stream
has an explicit seed). A :class:`Runner` runs them in this process (``workers=1``, or
when Ray is not installed) or on Ray: on a local Ray started on first use with
``workers`` CPUs (``0`` = every CPU) and shut down when the runner closes, or on the
cluster at ``address``, which is left running. Results come back in the order of the
arguments, so the caller's answer does not depend on which task finished first.

On Ray the tasks run in a small pool of long-lived workers (:class:`TaskWorker` actors,
one per CPU, started on first use and kept for every list the runner maps), each taking
the next task as it finishes one. A warm worker keeps its imports and what the task
functions cache per process (the planner's analytic model), which a fresh process per
task rebuilt every time. It also keeps its heap: after each task a worker reports its
resident memory, and one above ``worker_rss_limit_bytes`` (by default an equal share of
half the memory Ray schedules on) is retired and replaced by a fresh one, so memory stays
bounded (a reused worker of the global plan once grew to 9.5 GB).

Examples:
    >>> run_tasks(pow, [(2, 3), (3, 2)], workers=1)
    [8, 9]
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["Runner", "TaskWorker", "init_ray", "ray_available", "rss_bytes", "run_tasks"]

T = TypeVar("T")

#: times a task whose worker died is run again on a fresh worker (Ray's default for tasks)
TASK_RETRIES = 3
#: the share of the memory Ray schedules on that the pool's workers may keep between tasks
RSS_SHARE = 0.5
#: times a local Ray start is tried before its error is raised
RAY_START_ATTEMPTS = 3


def ray_available() -> bool:
    """True when Ray can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def rss_bytes() -> int:
    """This process's resident memory in bytes (its peak where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def init_ray(address: str | None, num_cpus: int) -> None:
    """Connect to the Ray cluster at ``address``, or start a local Ray with ``num_cpus``.

    A local Ray's workers run at the driver's niceness (Ray's default is 15: on a shared
    machine they would yield to everything else while the serial path runs at the
    driver's priority), unless the user set ``RAY_worker_niceness``. Ray gives a local
    node 30 s to register with its control store; on a loaded machine that can run out
    (``The current node timed out during startup``), so a failed local start is cleaned
    up and tried again, ``RAY_START_ATTEMPTS`` times in all, before its error is raised.
    """
    import ray

    kw: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if address:
        ray.init(address=address, **kw)
        return
    unset = "RAY_worker_niceness" not in os.environ
    if unset:
        os.environ["RAY_worker_niceness"] = "0"  # noqa: SIM112 - Ray config names are case-sensitive
    try:
        for attempt in range(1, RAY_START_ATTEMPTS + 1):
            try:
                ray.init(num_cpus=num_cpus, **kw)
                return
            except Exception as e:  # Ray raises a bare Exception for a start-up timeout
                ray.shutdown()
                if attempt == RAY_START_ATTEMPTS or "during startup" not in str(e):
                    raise
                print(
                    f"geoshard: the local Ray did not start ({e}); trying again",
                    file=sys.stderr,
                )
    finally:
        if unset:
            os.environ.pop("RAY_worker_niceness", None)


class TaskWorker:
    """A worker process that runs tasks one at a time (a Ray actor in :class:`Runner`)."""

    def run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> tuple[T, int]:
        """``fn(*args)`` and this process's resident memory after it (bytes, after a
        garbage collection, so that only what the process keeps is counted)."""
        out = fn(*args)
        gc.collect()
        return out, rss_bytes()


class Runner:
    """Runs lists of tasks serially or on Ray; Ray starts once, on first use, and stops on
    :meth:`close` (or at the end of a ``with`` block) when this runner started it.

    Args:
        workers: 1 runs in this process; 0 or N > 1 on a local Ray with every CPU or N
            CPUs (serially when Ray is not installed).
        address: an existing Ray cluster (implies Ray; left running).
        worker_rss_limit_bytes: a Ray worker whose resident memory is above this after a
            task is replaced by a fresh one; default: ``RSS_SHARE`` of the memory Ray
            schedules on, shared equally by the workers.
    """

    def __init__(
        self,
        workers: int = 1,
        address: str | None = None,
        worker_rss_limit_bytes: int | None = None,
    ) -> None:
        self.workers, self.address = workers, address
        self.worker_rss_limit_bytes = worker_rss_limit_bytes
        self.use_ray = (address is not None or workers != 1) and ray_available()
        self._started = False
        self._pool: list[Any] = []  # the live TaskWorker actors
        self._size = 0  # workers in the pool once it is full
        self._rss_limit = float("inf")
        self._actor: Any = None  # the TaskWorker actor class
        self.retired = 0  #: workers replaced for their memory

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def executor(self) -> str:
        """``ray`` or ``serial``."""
        return "ray" if self.use_ray else "serial"

    def map(
        self,
        fn: Callable[..., T],
        args: Sequence[tuple[Any, ...]],
        on_done: Callable[[int, int], None] | None = None,
    ) -> list[T]:
        """``[fn(*a) for a in args]``, in the order of ``args``; ``on_done(done, total)``
        as tasks finish. On Ray, tasks start in the order of ``args``, one per idle
        worker; a task whose worker dies is run again on a fresh worker, up to
        ``TASK_RETRIES`` times, then its error is raised."""
        total = len(args)
        if not self.use_ray or total == 0:
            out = []
            for i, a in enumerate(args):
                out.append(fn(*a))
                if on_done is not None:
                    on_done(i + 1, total)
            return out
        import ray

        self._connect()
        while len(self._pool) < min(self._size, total):
            self._pool.append(self._new_worker())
        results: list[Any] = [None] * total
        running: dict[Any, tuple[int, int]] = {}  # future -> (task, worker slot)
        idle = list(range(len(self._pool)))
        todo = list(range(total))  # tasks not started, next first
        deaths = [0] * total
        done = 0
        while done < total:
            while idle and todo:
                slot, i = idle.pop(0), todo.pop(0)
                running[self._pool[slot].run.remote(fn, args[i])] = (i, slot)
            ready, _ = ray.wait(list(running), num_returns=1)
            for f in ready:
                i, slot = running.pop(f)
                try:
                    results[i], rss = ray.get(f)
                except ray.exceptions.RayActorError:
                    # the worker died (the OOM killer, a crash): run the task again on a
                    # fresh one, as Ray retries a plain task
                    deaths[i] += 1
                    if deaths[i] > TASK_RETRIES:
                        raise
                    self._pool[slot] = self._new_worker()
                    todo.insert(0, i)
                    idle.append(slot)
                    continue
                if rss > self._rss_limit:
                    ray.kill(self._pool[slot])
                    self._pool[slot] = self._new_worker()
                    self.retired += 1
                idle.append(slot)
                done += 1
                if on_done is not None:
                    on_done(done, total)
        return results

    def _connect(self) -> None:
        import ray

        if not ray.is_initialized():
            init_ray(self.address, self.workers or os.cpu_count() or 1)
            self._started = True
        if not self._size:
            resources = ray.cluster_resources()
            cpus = max(1, int(resources.get("CPU", 1)))
            self._size = min(cpus, self.workers) if self.workers > 1 else cpus
            memory = resources.get("memory", 0.0)
            if self.worker_rss_limit_bytes is not None:
                self._rss_limit = self.worker_rss_limit_bytes
            elif memory:
                self._rss_limit = RSS_SHARE * memory / self._size
            self._actor = ray.remote(num_cpus=1)(TaskWorker)

    def _new_worker(self) -> Any:
        return self._actor.remote()

    def close(self) -> None:
        """Stop this runner's Ray workers; shut Ray down if this runner started it."""
        if self._pool:
            import ray

            for w in self._pool:
                ray.kill(w)
            self._pool.clear()
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
        self._size = 0  # a later map sizes the pool again


def run_tasks(
    fn: Callable[..., T],
    args: Sequence[tuple[Any, ...]],
    *,
    workers: int = 1,
    address: str | None = None,
    on_done: Callable[[int, int], None] | None = None,
) -> list[T]:
    """``[fn(*a) for a in args]``, serially or on Ray (a :class:`Runner` for one list).

    Args:
        fn: a module-level function (Ray ships it to its workers by reference).
        args: one argument tuple per task.
        workers: 1 runs in this process; 0 or N > 1 run on a local Ray with every CPU or
            N CPUs (serially when Ray is not installed).
        address: an existing Ray cluster (implies Ray).
        on_done: called with (tasks done, tasks) as tasks finish (progress bars).

    Returns:
        The results, in the order of ``args``.
    """
    with Runner(workers, address) as runner:
        return runner.map(fn, args, on_done)
