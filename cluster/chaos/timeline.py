"""Availability, latency and failover time of a chaos run, from its request samples.

A :class:`Sample` is one request the load generator made: when it was sent (seconds
since the run started), what it was, its HTTP status (0 when no answer came) and its
latency. :func:`phase_stats` splits them at the fault's injection and healing
(``before`` / ``during`` / ``after``) and :func:`buckets` per second, for the plot.

Definitions (the README quotes them):

* **available**: a request answered 2xx, or 404 (a correct answer: a user with no
  features); a 429 or 503 is an honest refusal, but the user did not get an answer, so
  it counts against availability, as does no answer at all;
* **P99**: of the latencies of available requests;
* **failover time**: from the injection to the end of the last failed request sent
  while the fault was on; 0 when no request failed. When requests still failed in the
  fault's last second, the deployment had not recovered before the heal and the
  figure is the whole fault window (``recovered_before_heal`` is False).

Pure: no I/O, no clock.

Examples:
    >>> s = [Sample(0.1, "feature_read", 200, 2.0), Sample(1.2, "feature_read", 0, 5.0)]
    >>> phase_stats(s, fault_at_s=1.0, heal_at_s=2.0)["during"]["availability"]
    0.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Sample", "buckets", "failover_s", "percentile", "phase_stats"]


@dataclass(frozen=True)
class Sample:
    """One request of the load generator.

    Attributes:
        t_s: when it was sent, seconds since the run started.
        op: ``feature_write``, ``interaction_write`` or ``feature_read``.
        status: the HTTP status; 0 when no answer came (refused, timeout, reset).
        latency_ms: from sending to the answer (or the error).
    """

    t_s: float
    op: str
    status: int
    latency_ms: float

    @property
    def available(self) -> bool:
        """True when the request was answered 2xx or 404."""
        return 200 <= self.status < 300 or self.status == 404


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1, nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    rank = max(1, math.ceil(q * len(xs)))
    return xs[min(rank, len(xs)) - 1]


def _stats(samples: Sequence[Sample], span_s: float) -> dict[str, Any]:
    ok = [s.latency_ms for s in samples if s.available]
    n = len(samples)
    p50, p99 = percentile(ok, 0.5), percentile(ok, 0.99)
    return {
        "requests": n,
        "available": len(ok),
        "availability": round(len(ok) / n, 4) if n else None,
        "throughput_per_s": round(len(ok) / span_s, 2) if span_s > 0 else None,
        "p50_ms": round(p50, 2) if p50 is not None else None,
        "p99_ms": round(p99, 2) if p99 is not None else None,
        "errors_by_status": _by_status(samples),
    }


def _by_status(samples: Sequence[Sample]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in samples:
        if not s.available:
            k = str(s.status) if s.status else "no_answer"
            out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def phase_stats(
    samples: Sequence[Sample], *, fault_at_s: float, heal_at_s: float, end_s: float | None = None
) -> dict[str, dict[str, Any]]:
    """Availability, throughput and P50/P99 before, during and after the fault.

    Raises:
        ValueError: ``heal_at_s`` is before ``fault_at_s``.
    """
    if heal_at_s < fault_at_s:
        raise ValueError(f"heal_at_s(={heal_at_s}) must be >= fault_at_s(={fault_at_s})")
    end = end_s if end_s is not None else max((s.t_s for s in samples), default=heal_at_s)
    before = [s for s in samples if s.t_s < fault_at_s]
    during = [s for s in samples if fault_at_s <= s.t_s < heal_at_s]
    after = [s for s in samples if s.t_s >= heal_at_s]
    return {
        "before": _stats(before, fault_at_s),
        "during": _stats(during, heal_at_s - fault_at_s),
        "after": _stats(after, max(0.0, end - heal_at_s)),
    }


def failover_s(
    samples: Sequence[Sample], *, fault_at_s: float, heal_at_s: float
) -> tuple[float, bool]:
    """``(seconds, recovered_before_heal)``, as the module docstring defines them."""
    failed = [s for s in samples if fault_at_s <= s.t_s < heal_at_s and not s.available]
    if not failed:
        return 0.0, True
    last = max(failed, key=lambda s: s.t_s + s.latency_ms / 1000)
    end = last.t_s + last.latency_ms / 1000
    recovered = last.t_s < heal_at_s - 1.0
    if not recovered:
        return round(heal_at_s - fault_at_s, 3), False
    return round(max(0.0, end - fault_at_s), 3), True


def buckets(samples: Sequence[Sample], width_s: float = 1.0) -> list[dict[str, Any]]:
    """Per ``width_s`` window: answered, failed, availability and P99 of the answered.

    Raises:
        ValueError: ``width_s`` <= 0.
    """
    if width_s <= 0:
        raise ValueError(f"width_s(={width_s}) must be > 0")
    if not samples:
        return []
    n = int(max(s.t_s for s in samples) // width_s) + 1
    rows: list[list[Sample]] = [[] for _ in range(n)]
    for s in samples:
        rows[int(s.t_s // width_s)].append(s)
    out = []
    for i, row in enumerate(rows):
        ok = [s.latency_ms for s in row if s.available]
        p99 = percentile(ok, 0.99)
        out.append(
            {
                "t_s": round(i * width_s, 3),
                "ok_per_s": round(len(ok) / width_s, 2),
                "errors_per_s": round((len(row) - len(ok)) / width_s, 2),
                "availability": round(len(ok) / len(row), 4) if row else None,
                "p99_ms": round(p99, 2) if p99 is not None else None,
            }
        )
    return out
