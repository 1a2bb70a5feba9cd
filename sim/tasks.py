"""Independent tasks, one after another or on Ray, with the same answers in the same order.

The planner's screen and confirmation are lists of independent calls of a module-level
function (pure functions of their arguments: specs travel as JSON, every random stream
has an explicit seed). A :class:`Runner` runs them in this process (``workers=1``, or
when Ray is not installed) or as Ray tasks: on a local Ray started on first use with
``workers`` CPUs (``0`` = every CPU) and shut down when the runner closes (one start for
every phase of a plan; each task in a fresh worker), or on the cluster at
``address``, which is left running. Results come back in the order of the arguments, so
the caller's answer does not depend on which task finished first. This is the pattern of
:mod:`geoshard.sim.parallel`, for any task function.

Examples:
    >>> run_tasks(pow, [(2, 3), (3, 2)], workers=1)
    [8, 9]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["Runner", "ray_available", "run_tasks"]

T = TypeVar("T")


def ray_available() -> bool:
    """True when Ray can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class Runner:
    """Runs lists of tasks serially or on Ray; Ray starts once, on first use, and stops on
    :meth:`close` (or at the end of a ``with`` block) when this runner started it.

    Args:
        workers: 1 runs in this process; 0 or N > 1 on a local Ray with every CPU or N
            CPUs (serially when Ray is not installed).
        address: an existing Ray cluster (implies Ray; left running).
    """

    def __init__(self, workers: int = 1, address: str | None = None) -> None:
        self.workers, self.address = workers, address
        self.use_ray = (address is not None or workers != 1) and ray_available()
        self._started = False
        self._remote: dict[Callable[..., Any], Any] = {}

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
        as tasks finish."""
        total = len(args)
        if not self.use_ray or total == 0:
            out = []
            for i, a in enumerate(args):
                out.append(fn(*a))
                if on_done is not None:
                    on_done(i + 1, total)
            return out
        import ray

        if not ray.is_initialized():
            kw: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if self.address:
                ray.init(address=self.address, **kw)
            else:
                # Ray runs its workers at niceness 15 by default: on a shared machine they
                # would yield to everything else while the serial path runs at the
                # driver's priority. The local Ray's workers get the driver's (unless the
                # user set RAY_worker_niceness).
                unset = "RAY_worker_niceness" not in os.environ
                if unset:
                    os.environ["RAY_worker_niceness"] = "0"  # noqa: SIM112 - Ray config names are case-sensitive
                try:
                    ray.init(num_cpus=self.workers or os.cpu_count() or 1, **kw)
                finally:
                    if unset:
                        os.environ.pop("RAY_worker_niceness", None)
            self._started = True
        remote = self._remote.get(fn)
        if remote is None:
            # a fresh worker per task, as sim.parallel does: a worker kept for the next
            # task kept the last one's heap too (two confirmation workers of the global
            # plan grew to 9.5 GB each)
            remote = self._remote[fn] = ray.remote(num_cpus=1, max_calls=1)(fn)
        futures = [remote.remote(*a) for a in args]
        index = {f: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * total
        pending = list(futures)
        done = 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for f in ready:
                results[index[f]] = ray.get(f)
                done += 1
                if on_done is not None:
                    on_done(done, total)
        return results

    def close(self) -> None:
        """Shut Ray down if this runner started it."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
            self._remote.clear()


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
