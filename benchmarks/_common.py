"""Shared harness for geoshard benchmarks.

Every benchmark measures ours against a reference *in the same run* and reports ratios,
so a noisy machine does not fool anyone. With ``--json`` a benchmark prints exactly one
object::

    {"benchmark": NAME, "metrics": {...}, "ratios": {NAME: {"value": V, "goal": G}}}

A ratio meets its goal when ``value >= goal`` (lower-is-better figures are expressed so
that higher is better, for example ``budget / measured``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def median_seconds(fn: Callable[[], Any], *, repeat: int = 5, warmup: int = 1) -> float:
    """Run ``fn`` ``warmup`` times untimed, then ``repeat`` times; return the median wall time."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass
class Report:
    """Collects metrics and ratios for one benchmark and prints them."""

    benchmark: str
    metrics: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)

    def ratio(self, name: str, value: float, goal: float) -> None:
        """Record a ratio; it meets its goal when ``value >= goal``."""
        self.ratios[name] = {"value": round(float(value), 4), "goal": float(goal)}

    def ok(self) -> bool:
        """True when every ratio meets its goal."""
        return all(r["value"] >= r["goal"] for r in self.ratios.values())

    def emit(self, as_json: bool) -> int:
        """Print the report (JSON or a table) and return the exit code (0 ok, 1 a goal missed)."""
        if as_json:
            print(
                json.dumps(
                    {"benchmark": self.benchmark, "metrics": self.metrics, "ratios": self.ratios},
                    sort_keys=True,
                )
            )
        else:
            print(f"# {self.benchmark}  (python {platform.python_version()}, {platform.machine()})")
            for k, v in self.metrics.items():
                print(f"  {k:<44} {v}")
            for k, r in self.ratios.items():
                mark = "ok " if r["value"] >= r["goal"] else "MISS"
                print(f"  [{mark}] {k:<38} {r['value']:>10.3f}  (goal >= {r['goal']})")
        return 0 if self.ok() else 1


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark takes (``--json``, ``--quick``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    return p


def log(msg: str) -> None:
    """Progress to stderr, never stdout (stdout carries the data)."""
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def own_deployment(
    report: Report, spec: Path, *, api_workers: int, users: int, items: int
) -> Iterator[Path]:
    """``geoshard up`` of ``spec`` in a temp dir, seeded with ``users`` and ``items``; its
    state dir; always stopped. ``up_s`` and ``seed_s`` go to the report."""
    from geoshard.cluster.launcher import Launcher
    from geoshard.cluster.seed import seed_deployment

    with tempfile.TemporaryDirectory(prefix=f"bench-{report.benchmark}-dep-") as tmp:
        root = Path(tmp) / "state"
        launcher = Launcher(root, log=log)
        try:
            t = time.perf_counter()
            launcher.up(spec, api_workers=api_workers)
            report.metrics["up_s"] = round(time.perf_counter() - t, 1)
            t = time.perf_counter()
            seed_deployment(launcher.dir, users=users, items=items, progress=lambda s, d, n: None)
            report.metrics["seed_s"] = round(time.perf_counter() - t, 1)
            yield root
        finally:
            launcher.down()
