"""Progress bars on stderr for commands whose work comes in named phases.

Data goes to stdout, so bars go to stderr, and only when stderr is a terminal (a pipe
or a log file gets nothing). :func:`phase_bars` gives one bar per phase, each created
the first time the phase reports.

Examples:
    >>> with phase_bars() as progress:
    ...     progress("screen", 1, 4)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["phase_bars"]


@contextmanager
def phase_bars() -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(phase, done, total)`` callback that draws one bar per phase on stderr
    (off when stderr is not a TTY); the bars disappear when the block ends."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True, highlight=False),
        disable=not sys.stderr.isatty(),
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bars.add_task(phase, total=total)
        bars.update(tasks[phase], completed=done, total=total)

    with bars:
        yield progress
