"""Independent tasks, one after another or on Ray, with the same answers in the same order.

The planner's screen and confirmation are lists of independent calls of a module-level
function (pure functions of their arguments: specs travel as JSON, every random stream
has an explicit seed). :func:`run_tasks` runs them in this process (``workers=1``, or
when Ray is not installed) or as Ray tasks: on a local Ray started here with
``workers`` CPUs (``0`` = every CPU) and shut down after, or on the cluster at
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

__all__ = ["ray_available", "run_tasks"]

T = TypeVar("T")


def ray_available() -> bool:
    """True when Ray can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def run_tasks(
    fn: Callable[..., T],
    args: Sequence[tuple[Any, ...]],
    *,
    workers: int = 1,
    address: str | None = None,
    on_done: Callable[[int, int], None] | None = None,
) -> list[T]:
    """``[fn(*a) for a in args]``, serially or on Ray.

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
    total = len(args)
    use_ray = total > 0 and (address is not None or workers != 1) and ray_available()
    if not use_ray:
        out = []
        for i, a in enumerate(args):
            out.append(fn(*a))
            if on_done is not None:
                on_done(i + 1, total)
        return out
    return _ray(fn, args, workers, address, on_done)


def _ray(
    fn: Callable[..., T],
    args: Sequence[tuple[Any, ...]],
    workers: int,
    address: str | None,
    on_done: Callable[[int, int], None] | None,
) -> list[T]:
    import ray

    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=workers or os.cpu_count() or 1, **kw)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(fn)
        futures = [remote.remote(*a) for a in args]
        index = {f: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(futures)
        pending = list(futures)
        done = 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for f in ready:
                results[index[f]] = ray.get(f)
                done += 1
                if on_done is not None:
                    on_done(done, len(futures))
        return results
    finally:
        if started:
            ray.shutdown()
